// mambac: the Mamba-1 language model in C. Public API of libmambac.
//
// Overview: load a checkpoint folder (Hugging Face layout, a hub-cache snapshot, or ORG/NAME from the local hub
// cache) with mc_model_load, a tokenizer with mc_tokenizer_load, then either run mc_model_forward over token ids
// (logits of every position, carrying an mc_state between calls) or mc_generate (prefill + recurrent decode with
// the sampling controls of transformers' generate).
//
// Errors: every fallible function returns mc_status and fills the optional mc_error *err (last argument) with a
// one-line message. Owned outputs are NULL after a failure. Nothing here prints or exits.
#ifndef MAMBAC_H
#define MAMBAC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MC_API __attribute__((visibility("default")))

typedef enum mc_status {
    MC_OK = 0,
    MC_ERR_IO,          // a file is missing, unreadable or short
    MC_ERR_FORMAT,      // a file's contents are malformed
    MC_ERR_INVALID,     // an argument (flag, token id, text) is out of range
    MC_ERR_UNSUPPORTED, // well-formed but not something mambac runs
    MC_ERR_NOMEM,       // an allocation failed
    MC_ERR_INTERNAL,    // a bug: an invariant broke
} mc_status;

typedef struct mc_error {
    mc_status code;
    char msg[256];
} mc_error;

typedef enum mc_dtype {
    MC_DTYPE_F32 = 0,
    MC_DTYPE_F16,
    MC_DTYPE_BF16,
    MC_DTYPE_I8, // weights only: int8 with per-group f32 scales
} mc_dtype;

MC_API const char *mc_dtype_name(mc_dtype dtype);
MC_API const char *mc_status_name(mc_status st);

// ---------------------------------------------------------------------------------------------------------------
// Model configuration (transformers MambaConfig, spec §1), resolved: derived fields filled, vocab padded.

typedef struct mc_config {
    int64_t vocab_size;        // rows of the embedding / lm_head (padded)
    int64_t hidden_size;       // H (d_model)
    int64_t intermediate_size; // E (d_inner)
    int64_t state_size;        // N (d_state)
    int64_t time_step_rank;    // R (dt_rank)
    int64_t conv_kernel;       // K (d_conv)
    int64_t num_hidden_layers; // NL
    int64_t expand;
    double layer_norm_epsilon;
    bool use_bias;
    bool use_conv_bias;
    bool residual_in_fp32;
    bool tie_word_embeddings;
    int32_t bos_token_id;
    int32_t eos_token_id;
    int32_t pad_token_id;
    double initializer_range;
    double time_step_scale, time_step_min, time_step_max, time_step_floor;
    bool rescale_prenorm_residual;
    bool time_step_init_constant; // time_step_init_scheme "constant" (else "random")
    bool original_format; // read from mamba_ssm names (d_model, n_layer, ssm_cfg)
    int64_t int8_group;   // > 0 when the file holds int8 matrices (quantization_config.group_size)
} mc_config;

// Parses a config.json (HF or mamba_ssm layout) into cfg with every default applied and checked.
MC_API mc_status mc_config_load(const char *path, mc_config *cfg, mc_error *err);

// The configuration of a released state-spaces/mamba-*-hf model by size: "130m", "370m", "790m", "1.4b", "2.8b"
// (vocab 50280, state 16, conv 4, expand 2, tied, no biases). MC_ERR_INVALID names an unknown preset.
MC_API mc_status mc_config_preset(const char *name, mc_config *cfg, mc_error *err);

// ---------------------------------------------------------------------------------------------------------------
// Model

typedef struct mc_model mc_model; // opaque; immutable after load, shareable between threads

typedef enum mc_backend {
    MC_BACKEND_AUTO = 0, // the fastest backend built and usable here: cuda when a GPU is present, else cpu
    MC_BACKEND_REF,      // the plain reference kernels (the oracle in tests)
    MC_BACKEND_CPU,      // SIMD + threads, chosen for this CPU at run time
    MC_BACKEND_CUDA,     // NVIDIA GPUs (built when nvcc is found)
} mc_backend;

typedef enum mc_weight_dtype {
    MC_WEIGHTS_AS_STORED = 0,
    MC_WEIGHTS_F32,
    MC_WEIGHTS_F16,
    MC_WEIGHTS_BF16,
    MC_WEIGHTS_INT8, // per-group int8 (group of MC_INT8_GROUP along each row) with f32 scales
} mc_weight_dtype;

#define MC_INT8_GROUP 64

// How a GPU multiplies: f32 (the default: f32-accurate products whatever the weights' dtype; large f32 × f32 ones
// run as three TF32 tensor-core terms, ~1e-5 of the largest output against SGEMM's ~1e-6), TF32, or bf16
// tensor-core products (activations rounded once to bf16 as autocast does; f32 accumulation, f32 activations,
// state and, in training, master weights). The CPU always computes in f32.
typedef enum mc_precision { MC_PRECISION_F32 = 0, MC_PRECISION_TF32, MC_PRECISION_BF16 } mc_precision;

typedef struct mc_load_opts {
    const char *revision;          // hub cache revision for ORG/NAME (NULL = "main")
    mc_backend backend;            // MC_BACKEND_AUTO by default
    int n_threads;                 // <= 0: the number of physical cores
    mc_weight_dtype weight_dtype;  // the matrices (projections, embedding, head) are converted to this on load
    const char *lora;              // a PEFT LoRA adapter folder merged into the weights on load (NULL: none); an
                                   // adapted tied embedding is untied, so the head keeps the base (PEFT's semantics)
    mc_precision precision;        // how the states' products multiply on a GPU (MC_PRECISION_F32)
} mc_load_opts;

MC_API void mc_load_opts_init(mc_load_opts *opts); // revision main, auto backend, all cores, weights as stored
MC_API const char *mc_backend_name(mc_backend backend);
// Physical cores of this machine (>= 1).
MC_API int mc_cpu_physical_cores(void);
// The machine's memory read bandwidth in GB/s: the best of three passes of a vectorized n_threads-thread read loop
// over a 1 GiB buffer (0 when the buffer cannot be allocated). Takes about a second.
MC_API double mc_cpu_read_bandwidth(int n_threads);

// Loads MODEL: a folder with config.json + model.safetensors (or an index and shards), a hub-cache snapshot
// folder, a hub-cache repo folder (models--ORG--NAME), or "ORG/NAME" found in $HF_HUB_CACHE, $HF_HOME/hub or
// ~/.cache/huggingface/hub. F32 weights are memory-mapped without a copy. opts may be NULL. Owned: mc_model_free.
MC_API mc_status mc_model_load(const char *path, const mc_load_opts *opts, mc_model **out, mc_error *err);
MC_API void mc_model_free(mc_model *model); // NULL is a no-op

// Resolves MODEL (as mc_model_load takes it) to the folder holding its files without loading anything, e.g. to find
// its tokenizer.json. *dir is owned (free()).
MC_API mc_status mc_model_resolve_dir(const char *path, const char *revision, char **dir, mc_error *err);
MC_API const mc_config *mc_model_config(const mc_model *model);
MC_API const char *mc_model_dir(const mc_model *model); // the resolved folder the files came from
MC_API mc_dtype mc_model_weight_dtype(const mc_model *model); // the dtype the projection matrices are held in

typedef struct mc_model_info {
    int64_t n_params;       // distinct parameters (tied head counted once)
    int64_t n_tensors;      // tensors read from the files
    int64_t n_by_dtype[4];  // parameter counts per stored mc_dtype
    int64_t weight_bytes;   // bytes of weights as stored
    int64_t resident_bytes; // bytes mambac holds besides the mapping (converted copies)
    int64_t state_bytes;    // recurrent state per sequence
    int64_t read_bytes_per_token; // weight bytes one decode step reads (all matrices, the head, one embedding row)
    int n_threads;          // threads the kernels use
    mc_backend backend;     // the backend in use (never AUTO)
} mc_model_info;

MC_API void mc_model_get_info(const mc_model *model, mc_model_info *info);

// A new model with randomly initialised weights, drawn as transformers 5.17 initialises MambaForCausalLM (spec §5.1:
// normal embeddings and in/x projections, uniform dt/conv/out projections, the Δ-bias rule, A_log = ln(1..N), D = 1)
// from a generator seeded with seed. Weights are f32 unless opts asks for another dtype. Owned: mc_model_free.
MC_API mc_status mc_model_init(const mc_config *cfg, uint64_t seed, const mc_load_opts *opts, mc_model **out,
                               mc_error *err);

// Writes the model into folder dir (created if missing) as transformers lays it out: config.json and
// model.safetensors, matrices in their current dtype (int8 as I8 tensors plus "<name>_scale" F32 scales and a
// quantization_config in config.json, which only mambac reads), vectors in f32, lm_head omitted when tied.
MC_API mc_status mc_model_save(const mc_model *model, const char *dir, mc_error *err);

// ---------------------------------------------------------------------------------------------------------------
// Recurrent state of n_seq sequences (spec §4): per layer a conv window [n_seq, E, K] and SSM state [n_seq, E, N],
// all f32. A fresh state is zero (= empty history).

typedef struct mc_state mc_state;

MC_API mc_status mc_state_new(const mc_model *model, int64_t n_seq, mc_state **out, mc_error *err);
MC_API void mc_state_free(mc_state *state);
MC_API int64_t mc_state_n_seq(const mc_state *state);
MC_API mc_status mc_state_reset(mc_state *state, mc_error *err); // back to zero for every sequence

// Where the forward passes that use a state spend their time, for benchmarks: while profiling is on, each part of
// the forward is timed (wall clock, threads included) and summed. Each part is one op per layer (or per call).
typedef enum mc_profile_part {
    MC_PROFILE_EMBED,    // token embedding lookup
    MC_PROFILE_NORM,     // residual add + RMSNorm (every layer's and the final one)
    MC_PROFILE_IN_PROJ,  // in_proj matmul
    MC_PROFILE_CONV,     // causal conv1d + SiLU
    MC_PROFILE_X_PROJ,   // x_proj matmul
    MC_PROFILE_DT_PROJ,  // dt_proj matmul
    MC_PROFILE_SCAN,     // selective scan (discretize, scan, readout, D skip, gate)
    MC_PROFILE_OUT_PROJ, // out_proj matmul
    MC_PROFILE_LM_HEAD,  // logits matmul
    MC_PROFILE_COUNT
} mc_profile_part;

MC_API void mc_state_profile(mc_state *state, bool on); // on: zero the totals and start timing; off: stop
MC_API void mc_state_profile_get(const mc_state *state, double seconds[MC_PROFILE_COUNT]);
MC_API const char *mc_profile_part_name(int part); // "embed", "norm", "in_proj", ... ("?" when out of range)

// Copies sequence src_seq of src into sequence dst_seq of dst (same model).
MC_API mc_status mc_state_copy_seq(mc_state *dst, int64_t dst_seq, const mc_state *src, int64_t src_seq, mc_error *err);

// ---------------------------------------------------------------------------------------------------------------
// Forward pass.
//
// Runs n_seq sequences of n_tok tokens each (ids [n_seq, n_tok]), continuing from state (which it updates; the
// state's n_seq must equal n_seq). Writes logits [n_seq, n_tok, V] when all_logits, else the last position only
// [n_seq, V]; logits may be NULL to only advance the state. n_tok == 1 takes the recurrent step form. Token ids
// outside [0, V) are rejected with MC_ERR_INVALID.
MC_API mc_status mc_model_forward(const mc_model *model, mc_state *state, const int32_t *ids, int64_t n_seq,
                                  int64_t n_tok, bool all_logits, float *logits, mc_error *err);

// Called with the tokens processed so far; return false to cancel (the call then fails with MC_ERR_INVALID).
typedef bool (*mc_progress_cb)(void *user, int64_t done, int64_t total);

// Scores a token stream: *nll = Σ_t −log p(ids[t+1] | ids[0..t]) over the n_ids − 1 predicted positions (spec §6,
// summed in double), *n_scored = n_ids − 1. Runs in chunks that carry the state, so memory stays fixed (one chunk
// of logits) whatever n_ids is. progress may be NULL.
MC_API mc_status mc_model_score(const mc_model *model, const int32_t *ids, int64_t n_ids, mc_progress_cb progress,
                                void *user, double *nll, int64_t *n_scored, mc_error *err);

// ---------------------------------------------------------------------------------------------------------------
// Tokenizer (tokenizer.json byte-level BPE, spec §10), exact to Hugging Face tokenizers 0.23.2: ids equal
// tok.encode(text, add_special_tokens=False).ids, text equals tok.decode(ids, skip_special_tokens=...).

typedef struct mc_tokenizer mc_tokenizer; // immutable after load: threads may share it

// Loads a tokenizer.json with a BPE model (vocab; merges as "a b" strings or ["a", "b"] pairs), added_tokens
// (normalized, special, lstrip, rstrip, single_word), an NFC or null normalizer, a ByteLevel pre-tokenizer
// (add_prefix_space, use_regex) and a ByteLevel decoder; post_processor, truncation and padding are ignored.
// Errors: MC_ERR_IO (unreadable), MC_ERR_FORMAT (bad JSON, missing or mistyped fields, a merge naming an unknown
// token, a duplicate token or id, an added token id that tokenizers would assign differently), MC_ERR_UNSUPPORTED
// (other model / normalizer / pre-tokenizer / decoder types, dropout > 0, byte_fallback, subword prefix or
// suffix). Messages name the file. Owned: mc_tokenizer_free.
MC_API mc_status mc_tokenizer_load(const char *path, mc_tokenizer **out, mc_error *err);
MC_API void mc_tokenizer_free(mc_tokenizer *tok);             // NULL is a no-op
MC_API int64_t mc_tokenizer_n_vocab(const mc_tokenizer *tok); // max id + 1 over vocab and added tokens (50277)

// Encodes len bytes of UTF-8 text (need not be NUL-terminated; may contain NUL, which is U+0000). No special
// tokens are added. Invalid UTF-8 is rejected with MC_ERR_INVALID "text: invalid UTF-8 at byte N". On success
// *ids (owned by the caller, free(); non-NULL even when *n_ids is 0) holds *n_ids ids; on failure NULL and 0.
MC_API mc_status mc_tokenizer_encode(const mc_tokenizer *tok, const char *text, size_t len, int32_t **ids,
                                     int64_t *n_ids, mc_error *err);

// The raw bytes a token stands for after byte-level decoding (may be a partial UTF-8 sequence); NULL with *len 0
// for ids that have no string (>= n_vocab, gaps in the vocab, negative). Borrowed: valid while tok lives.
MC_API const char *mc_tokenizer_token_bytes(const mc_tokenizer *tok, int32_t id, size_t *len);
// True for added tokens marked special (those decode drops with skip_special).
MC_API bool mc_tokenizer_is_special(const mc_tokenizer *tok, int32_t id);

// Decodes ids to text as tokenizers' decode does: ids without a string are skipped, special tokens too when
// skip_special, the bytes of the rest are concatenated and invalid UTF-8 becomes U+FFFD per maximal invalid
// subsequence (Rust from_utf8_lossy). Negative ids: MC_ERR_INVALID naming the id. *text is NUL-terminated
// (the text itself may contain NUL; *len, which may be NULL, gives its length) and owned by the caller (free()).
MC_API mc_status mc_tokenizer_decode(const mc_tokenizer *tok, const int32_t *ids, int64_t n_ids, bool skip_special,
                                     char **text, size_t *len, mc_error *err);

// Streaming UTF-8: feed token bytes, get back the longest prefix that is complete text (incomplete trailing
// sequences are held until the next feed or flush). Invalid sequences become U+FFFD as in decode, so feeding
// the token bytes of ids (in any chunks) then flushing gives exactly mc_tokenizer_decode's text.
// Start from a zeroed struct: mc_utf8_stream s = { 0 };
typedef struct mc_utf8_stream {
    unsigned char pending[4];
    int n_pending;
} mc_utf8_stream;

// Appends the text ready after adding bytes[0..len) to out and returns the bytes written. out_cap must be at
// least len * 3 + 16; with less (or a NULL s, out, or bytes with len > 0), nothing is consumed or written and 0 is
// returned.
MC_API size_t mc_utf8_stream_feed(mc_utf8_stream *s, const char *bytes, size_t len, char *out, size_t out_cap);
// Ends the stream: writes U+FFFD (3 bytes, out_cap >= 3) for a held incomplete sequence, resets s.
MC_API size_t mc_utf8_stream_flush(mc_utf8_stream *s, char *out, size_t out_cap);

// SHA-256 of the tokenizer.json bytes the tokenizer was loaded from (what `sha256sum tokenizer.json` prints); token
// files record it (mc_tokens_open checks it). All zero for a NULL tokenizer.
MC_API void mc_tokenizer_sha256(const mc_tokenizer *tok, uint8_t out[32]);

// ---------------------------------------------------------------------------------------------------------------
// Tokenizer training (src/tokenizer/train.c): byte-level BPE learned as Hugging Face tokenizers' BpeTrainer learns it
// (tokenizers 0.23.3) for a tokenizer with GPT-NeoX's pipeline: NFC normalizer, ByteLevel pre-tokenizer
// (add_prefix_space false, the GPT-2 regex), ByteLevel post-processor and decoder, BPE model without unk token. The
// saved tokenizer.json is byte for byte the one tokenizers writes for
//   Tokenizer(BPE()) + NFC + ByteLevel(add_prefix_space=False) pre-tokenizer and post-processor + ByteLevel decoder,
//   trained with BpeTrainer(vocab_size, min_frequency, special_tokens, initial_alphabet=ByteLevel.alphabet())
//   on the same files (tools/oracle/tokenizer_train_check.py).
// Ids: the special tokens (0, 1, ... in the order given), the 256 byte symbols by code point, then one per merge.
// Text is read as tokenizers' train_from_files reads files: line by line (each line with its '\n' is normalized and
// pre-tokenized alone), so no piece spans a line break. Special tokens in the text are not split out while training
// (a fresh tokenizers Tokenizer has none yet); encoding later matches them as added tokens.

typedef struct mc_bpe_train_opts {
    int64_t vocab_size;                // tokens to reach, the special tokens and the 256 byte symbols included (8192)
    int64_t min_frequency;             // training ends at the first pair seen fewer times than this (2, as
                                       // tokenizers' ByteLevelBPETokenizer.train; BpeTrainer's own default is 0)
    const char *const *special_tokens; // borrowed, n_special strings (UTF-8, non-empty; a repeat is added once)
    int64_t n_special;                 // ({ "<|endoftext|>" }, 1)
} mc_bpe_train_opts;

MC_API void mc_bpe_train_opts_init(mc_bpe_train_opts *opts); // the defaults in the comments above

typedef struct mc_bpe_trainer mc_bpe_trainer;

typedef struct mc_bpe_train_stats {
    int64_t n_files;        // texts fed
    int64_t n_bytes;        // their bytes
    int64_t n_sequences;    // their lines
    int64_t n_words;        // pre-tokenized pieces counted
    int64_t n_unique_words; // distinct pieces
    int64_t vocab_size;     // tokens of the trained vocabulary: less than asked when min_frequency or the corpus
                            // ran out of pairs first
    int64_t n_merges;       // merges in the saved file
} mc_bpe_train_stats;

// A trainer for opts (copied; the strings are copied into the vocabulary). MC_ERR_INVALID: vocab_size smaller than
// the special tokens + 256 byte symbols (tokenizers would quietly return a bigger vocabulary) or above 2^24,
// min_frequency < 0, an empty or non-UTF-8 special token. Owned: mc_bpe_trainer_free.
MC_API mc_status mc_bpe_trainer_new(const mc_bpe_train_opts *opts, mc_bpe_trainer **out, mc_error *err);
MC_API void mc_bpe_trainer_free(mc_bpe_trainer *t); // NULL is a no-op

// Counts the words of one file's text (len bytes, need not be NUL-terminated). name is used in messages. Text that
// is not valid UTF-8 is refused whole, as tokenizers refuses such a file: MC_ERR_INVALID "NAME: invalid UTF-8 at
// byte N". Feeding after training is MC_ERR_INVALID.
MC_API mc_status mc_bpe_trainer_feed(mc_bpe_trainer *t, const char *text, size_t len, const char *name, mc_error *err);
// Feeds the file at path (memory-mapped). MC_ERR_IO names an unreadable path.
MC_API mc_status mc_bpe_trainer_feed_file(mc_bpe_trainer *t, const char *path, mc_error *err);
// Learns the merges from everything fed. Deterministic: the same texts in the same order give the same result.
// MC_ERR_INVALID when no text was fed (an empty corpus) or when already trained.
MC_API mc_status mc_bpe_trainer_train(mc_bpe_trainer *t, mc_error *err);
MC_API void mc_bpe_trainer_stats(const mc_bpe_trainer *t, mc_bpe_train_stats *stats);
// Writes the trained tokenizer.json to path (through a temp file renamed into place). mc_tokenizer_load reads it.
MC_API mc_status mc_bpe_trainer_save(const mc_bpe_trainer *t, const char *path, mc_error *err);

// ---------------------------------------------------------------------------------------------------------------
// Token files (mambac data; src/tokenizer/tokens_file.c): a tokenized corpus for training, tied to its tokenizer.
//
// Layout, all integers little-endian:
//   offset  bytes  field
//        0      8  magic "MCTOKENS"
//        8      4  u32 version (1)
//       12      4  u32 header_bytes: where the ids start (a multiple of 64, so a mapping reads them aligned)
//       16      4  u32 token_bytes: 2 (uint16 ids, when the tokenizer's n_vocab <= 65536) or 4 (uint32 ids)
//       20      4  i32 eos_id: the id written after every document, -1 when documents are not separated
//       24      8  u64 n_tokens
//       32      8  u64 n_docs: documents (input files) written
//       40      8  u64 n_vocab: the tokenizer's mc_tokenizer_n_vocab; every id is below it
//       48     32  SHA-256 of the tokenizer.json bytes (as `sha256sum tokenizer.json` prints it)
//       80      4  u32 name_len
//       84  name_len  the tokenizer's name: the path it was loaded from, UTF-8, no NUL
//        …         zero bytes up to header_bytes
//   header_bytes   n_tokens × token_bytes: the ids, documents one after another
// The file's size is exactly header_bytes + n_tokens × token_bytes.

typedef struct mc_tokens mc_tokens; // an open token file (memory-mapped, read-only)

typedef struct mc_tokens_info {
    int64_t n_tokens;
    int64_t n_docs;
    int64_t n_vocab;
    int token_bytes; // 2 or 4
    int32_t eos_id;  // -1: none
    uint8_t tokenizer_sha256[32];
    const char *tokenizer_name; // borrowed: valid while the file (or writer) is open
} mc_tokens_info;

// Opens a token file and checks it whole: MC_ERR_IO (unreadable), MC_ERR_FORMAT (bad magic, truncated header or
// ids, bytes after the ids, inconsistent fields, an id >= n_vocab), MC_ERR_UNSUPPORTED (another version). When tok is
// not NULL, the file must have been made with that very tokenizer.json (same SHA-256), else MC_ERR_INVALID naming
// both hashes. Messages name the path. Owned: mc_tokens_close.
MC_API mc_status mc_tokens_open(const char *path, const mc_tokenizer *tok, mc_tokens **out, mc_error *err);
MC_API void mc_tokens_close(mc_tokens *t); // NULL is a no-op
MC_API void mc_tokens_get_info(const mc_tokens *t, mc_tokens_info *info);
// Copies ids [start, start + n) into ids. MC_ERR_INVALID when the range is not inside the file.
MC_API mc_status mc_tokens_read(const mc_tokens *t, int64_t start, int64_t n, int32_t *ids, mc_error *err);

typedef struct mc_tokens_writer mc_tokens_writer; // collects documents in memory (token_bytes per id) until saved

// A writer for ids of tok, named tokenizer_name in the header (copied; at most 4096 bytes). eos_id >= 0 is written
// after every document; -1 writes none. Owned: mc_tokens_writer_free.
MC_API mc_status mc_tokens_writer_new(const mc_tokenizer *tok, const char *tokenizer_name, int32_t eos_id,
                                      mc_tokens_writer **out, mc_error *err);
MC_API void mc_tokens_writer_free(mc_tokens_writer *w); // NULL is a no-op
// Appends one document (n ids, then the EOS id if any). MC_ERR_INVALID for an id outside [0, n_vocab).
MC_API mc_status mc_tokens_writer_add(mc_tokens_writer *w, const int32_t *ids, int64_t n, mc_error *err);
MC_API void mc_tokens_writer_get_info(const mc_tokens_writer *w, mc_tokens_info *info); // what save would write
// Writes the file (through a temp file renamed into place); the writer stays usable.
MC_API mc_status mc_tokens_writer_save(const mc_tokens_writer *w, const char *path, mc_error *err);

// ---------------------------------------------------------------------------------------------------------------
// Generation (spec §7): greedy by default; sampling with HF's processor order.
//
// Processors run on each row of scores in HF's order: repetition penalty, then (only when do_sample) temperature,
// top-k (ties at the k-th score kept), top-p (ascending cumulative-sum rule), min-p; then the token is the first
// argmax (greedy) or a multinomial draw from the softmax. The real-valued settings are doubles because HF takes
// Python floats: top-p's threshold is (float)(1 - top_p) computed in double, exactly as transformers does.

typedef struct mc_sampler_opts {
    bool do_sample;            // false: greedy argmax (only repetition_penalty applies)
    double temperature;        // > 0; 1 = off
    int64_t top_k;             // >= 0; 0 = off. HF's generate defaults to 50 when sampling: set it yourself
    double top_p;              // in [0, 1]; 1 = off
    double min_p;              // in [0, 1]; 0 = off
    double repetition_penalty; // > 0; 1 = off (applied in greedy mode too, as HF does)
    uint64_t seed;             // sequence i of a batch draws from its own stream derived from (seed, i)
} mc_sampler_opts;

MC_API void mc_sampler_opts_init(mc_sampler_opts *opts); // greedy, all filters off (top_k 0), seed 0

// Called for every new token of sequence seq (index into the prompts), in order, after the token was appended to
// that sequence's output. Return false to end that sequence (the token stays in its output).
typedef bool (*mc_token_cb)(void *user, int64_t seq, int32_t token);

// What one mc_generate call did, for reports. Times are wall-clock seconds.
typedef struct mc_generate_stats {
    int64_t n_prompt_tokens; // summed over sequences
    int64_t n_new_tokens;    // summed over sequences
    double prefill_seconds;  // prompt forward passes and choosing each sequence's first token
    double decode_seconds;   // the one-token steps after that
} mc_generate_stats;

typedef struct mc_generate_opts {
    int64_t max_new_tokens;  // >= 0; HF's default limit is 20 new tokens
    bool stop_at_eos;        // stop a sequence when it emits an eos id (kept in the output)
    const int32_t *eos_ids;  // NULL: the config's eos_token_id (none when it is negative)
    int64_t n_eos_ids;
    mc_sampler_opts sampler;
    mc_token_cb on_token;    // may be NULL
    void *user;
    mc_generate_stats *stats; // may be NULL; filled on success
} mc_generate_opts;

// max_new_tokens 20, stop at the config's eos, greedy sampler, no callback, no stats. model may be NULL.
MC_API void mc_generate_opts_init(mc_generate_opts *opts, const mc_model *model);

// Generates for n_seq prompts of different lengths (prompts[i] has prompt_len[i] >= 1 ids). Each sequence gets the
// same tokens it would get alone: each prompt is prefilled on its own, then the unfinished sequences step together.
// out_ids[i] receives the new tokens (owned, free(); non-NULL even when empty), out_len[i] their count; both arrays
// have n_seq entries. Errors: MC_ERR_INVALID naming the setting or prompt (n_seq < 1, empty prompt, token id outside
// [0, V), max_new_tokens < 0, temperature <= 0, top_k < 0, top_p or min_p outside [0, 1], repetition_penalty <= 0,
// eos id outside [0, V)), MC_ERR_NOMEM, and whatever mc_model_forward reports. On failure every out_ids[i] is NULL.
MC_API mc_status mc_generate(const mc_model *model, const int32_t *const *prompts, const int64_t *prompt_len,
                             int64_t n_seq, const mc_generate_opts *opts, int32_t **out_ids, int64_t *out_len,
                             mc_error *err);

// ---------------------------------------------------------------------------------------------------------------
// Training (src/train/): gradients of the causal-LM loss (spec §6) for every weight, or for LoRA adapters with
// PEFT's math (spec §8) over a frozen model.

typedef enum mc_lora_bias {
    MC_LORA_BIAS_NONE = 0,  // PEFT bias="none": no bias trained
    MC_LORA_BIAS_ALL,       // every bias of the model trains (in_proj, conv1d, dt_proj, out_proj)
    MC_LORA_BIAS_LORA_ONLY, // the biases of adapted modules train
} mc_lora_bias;

// The modules a LoRA adapter may adapt (PEFT target names "embeddings", "in_proj", "x_proj", "out_proj").
enum { MC_LORA_EMBEDDINGS = 1, MC_LORA_IN_PROJ = 2, MC_LORA_X_PROJ = 4, MC_LORA_OUT_PROJ = 8 };

typedef struct mc_lora_spec {
    int r;             // rank
    double alpha;      // lora_alpha
    bool use_rslora;   // scaling alpha / sqrt(r) instead of alpha / r
    double dropout;    // lora_dropout: inverted dropout on the Linear adapters' input while training, in [0, 1)
    unsigned targets;  // MC_LORA_* bits, at least one
    mc_lora_bias bias;
} mc_lora_spec;

typedef struct mc_trainer mc_trainer;



// One trainable tensor: its Hugging Face name (all weights) or PEFT adapter key (LoRA), shape as saved, and its f32
// value and gradient (numel floats each, in the backend's memory; host memory on ref and cpu). A lora_embedding_A
// [r, V] is held transposed ([V, r]) inside: `transposed` says so.
typedef struct mc_train_tensor {
    const char *name;
    int ndim;
    int64_t shape[3];
    int64_t numel;
    float *value;
    float *grad;
    bool decay;      // transformers' Trainer applies weight decay to it (not biases, not layers.i.norm.weight)
    bool transposed; // value and grad are the transpose of the 2-D shape
} mc_train_tensor;

// lora == NULL: every weight of the model becomes trainable (f32 master copies). Else the model stays frozen and
// new adapters are made with PEFT's default initialisation (Linear A ~ U(±1/sqrt(in)), B = 0; embedding A = 0,
// B ~ N(0, 1)) from seed, so the adapted model starts equal to the base. The model must outlive the trainer.
MC_API mc_status mc_trainer_new(const mc_model *model, const mc_lora_spec *lora, uint64_t seed, mc_trainer **out,
                                mc_error *err);
MC_API void mc_trainer_free(mc_trainer *t);
MC_API int64_t mc_trainer_n_tensors(const mc_trainer *t);
MC_API void mc_trainer_tensor(const mc_trainer *t, int64_t i, mc_train_tensor *out);
MC_API void mc_trainer_zero_grad(mc_trainer *t);

// Runs n_seq sequences of n_tok ids through the model and back: position t predicts labels[t + 1] (labels may equal
// ids; −100 ignores a target). Adds scale · ∂(Σ NLL)/∂θ to every gradient, and returns Σ NLL over the kept targets
// and their count (scale = 1 / count gives the mean loss's gradient, as transformers computes it).
MC_API mc_status mc_trainer_grad(mc_trainer *t, const int32_t *ids, const int32_t *labels, int64_t n_seq,
                                 int64_t n_tok, double scale, double *nll_sum, int64_t *n_targets, mc_error *err);

// Truncated backpropagation through time (long documents in chunks): n_seq > 0 makes every later mc_trainer_grad
// (which must then have n_seq rows) start each row from the recurrent state the previous call ended that row with,
// and carry its own end state to the next call; no gradient flows into the carried state. Calling it again zeroes
// the state (a new stream); n_seq 0 turns carrying off.
MC_API mc_status mc_trainer_set_carry(mc_trainer *t, int64_t n_seq, mc_error *err);

// LoRA dropout masks are drawn from (the trainer's seed, stream, layer, module): the same stream gives the same
// masks. The training loop sets the stream to the micro-batch's global index, so a resumed run repeats the masks.
MC_API void mc_trainer_set_dropout_stream(mc_trainer *t, uint64_t stream);

// How the trainer's products multiply on a GPU (MC_PRECISION_F32 by default, and for a value outside the enum; no
// effect on the CPU). A NULL trainer is ignored.
MC_API void mc_trainer_set_precision(mc_trainer *t, mc_precision p);

// Call after changing tensor values (an optimizer step, loading): refreshes what is derived from them (A = −exp(A_log)).
MC_API mc_status mc_trainer_values_changed(mc_trainer *t, mc_error *err);

// Sets trainable tensors from a safetensors file (F32, F16 or BF16): each tensor of the file whose name is a
// trainable tensor's (PEFT's "<module>.base_layer.bias" spelling is read as "<module>.bias") must have its shape.
// require_all: every trainable tensor must be in the file. Tensors of the file that train nothing are an error
// (a mismatched adapter or checkpoint). *n_loaded counts the tensors set. Calls mc_trainer_values_changed.
MC_API mc_status mc_trainer_load_tensors(mc_trainer *t, const char *path, bool require_all, int64_t *n_loaded,
                                         mc_error *err);

// Saves what trains into folder dir (created if missing): all weights as a model folder (config.json and
// model.safetensors, as mc_model_save), or a LoRA adapter as PEFT saves one (adapter_config.json with every key
// PEFT 0.21 writes, adapter_model.safetensors under PEFT's keys), loadable by PeftModel.from_pretrained.
MC_API mc_status mc_trainer_save(const mc_trainer *t, const char *dir, mc_error *err);

// Reads a PEFT adapter folder's adapter_config.json into spec. Refuses (MC_ERR_UNSUPPORTED, naming the key) what
// mambac does not implement: DoRA, lora_bias, rank/alpha patterns, modules_to_save, a regex target, a target other
// than embeddings, in_proj, x_proj, out_proj.
MC_API mc_status mc_lora_spec_load(const char *dir, mc_lora_spec *spec, mc_error *err);

// Writes every trainable tensor's gradient under its name (F32, shapes as saved) plus "loss" (a one-element F32
// tensor) to a safetensors file.
MC_API mc_status mc_trainer_save_grads(const mc_trainer *t, const char *path, double loss, mc_error *err);

// ---------------------------------------------------------------------------------------------------------------
// The training loop (mambac train / finetune): transformers' Trainer defaults (spec §9), SFTTrainer's batches.

typedef struct mc_train_stats {
    int64_t step, total_steps; // optimizer steps done / planned
    int64_t epoch;             // the epoch the next batch comes from (0-based)
    double loss;               // mean loss of the steps since the last report
    double lr;                 // the learning rate of the last step
    double grad_norm;          // the global gradient norm before clipping, last step
    double tokens_per_s;       // real (unpadded) tokens per second since the run (or resume) started
    double elapsed_s, eta_s;
} mc_train_stats;

// Called after every optimizer step (logged: true at logging steps). Returning false stops the run after
// saving a checkpoint.
typedef bool (*mc_train_progress_cb)(void *user, const mc_train_stats *stats, bool logged);

typedef struct mc_train_opts {
    const char *data;          // dataset file: .jsonl/.json, .csv, .txt (required)
    const char *text_field;    // JSON key or CSV column of the text ("text")
    int data_format;           // 0 by extension, 1 JSON Lines, 2 CSV, 3 text lines, 4 one text document (packed),
                               // 5 a token file of mambac data (.bin, packed)
    int64_t max_length;        // truncation length, or block length when packing (1024)
    bool packing;              // concatenate examples into max_length blocks (false: pad each batch)
    bool tbptt;                // with packing: batch_size streams of consecutive blocks, each row continuing the
                               // state of the row before it (truncated BPTT; no shuffling)
    int eos;                   // 0 as TRL (EOS appended to a "text" field only), 1 always, 2 never
    double epochs;             // num_train_epochs (3)
    int64_t max_steps;         // > 0 overrides epochs (−1)
    int64_t batch_size;        // per_device_train_batch_size (8)
    int64_t grad_accum;        // gradient_accumulation_steps (1)
    double lr;                 // learning_rate (5e-5)
    double weight_decay;       // (0)
    double max_grad_norm;      // (1.0; 0 = no clipping)
    double warmup;             // warmup_steps: >= 1 steps, < 1 a ratio of the total (0)
    const char *lr_scheduler;  // linear, cosine, constant, constant_with_warmup ("linear")
    uint64_t seed;             // (42)
    bool shuffle;              // (true)
    int64_t logging_steps;     // (500)
    int64_t save_steps;        // checkpoint every N steps, 0 = only at the end (500)
    int64_t save_total_limit;  // keep at most N checkpoints, 0 = all (0)
    const char *output_dir;    // the result and checkpoint-N folders (required)
    const char *logging_dir;   // log.jsonl and loss.svg (default: output_dir)
    const char *resume;        // a checkpoint-N folder, or an output_dir whose newest complete checkpoint is used
    const char *init_adapter;  // LoRA: start from this PEFT adapter folder (its config replaces lora)
    const mc_lora_spec *lora;  // NULL: train every weight
    int precision;             // mc_precision: how a GPU multiplies (MC_PRECISION_F32)
    mc_train_progress_cb progress;
    void *user;
} mc_train_opts;

MC_API void mc_train_opts_init(mc_train_opts *opts); // the defaults in the comments above

// Data parallel over ranks launched by mpirun (`mpirun -np 4 mambac train ...`; the library built with MPI): call
// mc_dist_init before mc_train on every rank. mc_train then gives each rank its share of every global batch
// (batch_size rows per rank), sums the gradients, and shards the AdamW state (ZeRO stage 1); rank 0 alone writes
// logs, checkpoints (the whole optimizer state, so --resume works with another rank count) and the result. Outside
// mpirun it is one rank of one. A rank that dies or hangs makes the others fail within MAMBAC_DIST_TIMEOUT seconds
// (default 600) with a message naming the rank; mc_dist_abort then ends the job.
MC_API mc_status mc_dist_init(int *rank, int *size, mc_error *err);
MC_API void mc_dist_finalize(void);
MC_API void mc_dist_abort(int code);

// Trains model (frozen base for LoRA) on opts->data, tokenized with tok. Checkpoints: output_dir/checkpoint-N,
// each complete before it appears (written to a temporary folder, then renamed); --resume continues exactly (same
// batches, optimizer state, step). A NaN or infinite loss stops the run with an error naming the step; the last
// checkpoint stays. On success the final weights or adapter are in output_dir and *final_stats the last report.
MC_API mc_status mc_train(const mc_model *model, const mc_tokenizer *tok, const mc_train_opts *opts,
                          mc_train_stats *final_stats, mc_error *err);

#ifdef __cplusplus
}
#endif
#endif
