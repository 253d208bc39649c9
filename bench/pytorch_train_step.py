import time, torch
from transformers import MambaForCausalLM
torch.set_num_threads(2)
m = MambaForCausalLM.from_pretrained('/tmp/m130', dtype=torch.float32); m.train()
opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
g = torch.Generator().manual_seed(0)
x = torch.randint(0, 50280, (4, 128), generator=g)
ts = []
for i in range(3):
    t = time.time()
    loss = m(input_ids=x, labels=x).loss
    loss.backward(); opt.step(); opt.zero_grad()
    ts.append(time.time() - t)
    print('step', i, round(ts[-1], 2), 's', float(loss), flush=True)
med = sorted(ts[1:])[len(ts[1:]) // 2]
print('torch', torch.__version__, 'median of steps 1-2: %.2f s/step, %.2f tokens/s' % (med, 512 / med))
