"""torch's softplus (threshold 20, the one Mamba's Δ uses) on float32 inputs around the threshold and the regions a
wrong threshold would change, for tests/test_kernel_ssm.c (test_scan_softplus_reference).

    python3 tools/oracle/softplus_fixture.py > tests/fixtures/expect/softplus.json
"""
import json

import numpy as np
import torch

xs = np.concatenate([np.linspace(-30, -5, 11), np.linspace(-5, 5, 21), np.linspace(5, 25, 81),
                     [19.99, 20.0, 20.01, 30.0, 60.0]]).astype(np.float32)
ys = torch.nn.functional.softplus(torch.from_numpy(xs)).numpy()
print(json.dumps({"torch": torch.__version__, "x": [float(v) for v in xs], "softplus": [float(v) for v in ys]}))
