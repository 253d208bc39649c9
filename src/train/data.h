// Training datasets: reads examples (JSON Lines, CSV, plain text) and turns them into token sequences with their
// labels, as TRL's SFTTrainer prepares a dataset (spec §9.3). Cutting sequences into batches is batch.h's job.
//
// What a dataset holds, per example: ids [len] and labels [len] (labels equal ids except where a pre-tokenized
// example brings its own labels; -100 marks a position the loss ignores). Labels are not shifted: as in
// transformers, position t's logits are scored against labels[t + 1].
//
// Default for mambac: one example per row, right-padded to the longest row of each batch (packing off). That is
// what SFTTrainer does by default in TRL 1.10.0.dev0, the version spec §9.3 reads (SFTConfig packing=False,
// padding_free=False; DataCollatorForLanguageModeling pads input_ids with the pad id and labels with -100 to the
// batch's longest row). It also suits a recurrent model best: every row starts from a zero state, so no example
// sees the state another one left behind. Packing is available for pre-training (and is implied by
// MC_DATA_DOCUMENT): examples are concatenated into one stream and cut into blocks of max_length tokens, TRL's
// "wrapped" strategy, except that mambac packs the whole dataset as one stream where datasets.map packs each
// batch of 1000 rows separately. (TRL's default packing strategy, "bfd", keeps example boundaries but needs
// padding-free attention kernels; it is not implemented.)
//
// Tokenization, exactly as SFTTrainer (TRL 1.10.0.dev0 `_prepare_dataset`):
//   1. EOS: TRL appends the EOS token's *string* to the column literally named "text" when it does not already end
//      with it, whatever dataset_text_field says; so with dataset_text_field="quote" (the spec §9 recipe) no EOS is
//      appended. MC_DATA_EOS_TRL reproduces that (plain-text files count as a "text" column, as datasets' "text"
//      loader names it); MC_DATA_EOS_ALWAYS / _NEVER override it.
//   2. ids = tokenizer(text) with no special tokens added (GPT-NeoX adds none), labels = ids.
//   3. Without packing, truncation to max_length (keep_start by default), then examples whose labels are all -100
//      (e.g. an empty text) are dropped (TRL's filter; it runs only when max_length is set).
//   4. With packing, no per-example truncation: the stream is cut into blocks, the last block may be shorter.
// Pre-tokenized JSON Lines ("input_ids", optionally "labels") are used as given: no EOS, only truncation.
#pragma once

#include "mambac.h"

typedef enum mc_data_format {
    MC_DATA_AUTO = 0, // by the file's extension: .jsonl / .json JSONL, .csv CSV, .txt LINES
    MC_DATA_JSONL,    // one JSON object per line; blank lines skipped. A file whose first non-blank byte is '['
                      // is read as one JSON array of objects (errors then name the 0-based item: "x.json: item 3: ")
    MC_DATA_CSV,      // RFC 4180: header row, comma separated, "quoted" fields with "" escapes and line breaks
    MC_DATA_LINES,    // plain text, one example per line (LF or CRLF); blank lines skipped
    MC_DATA_DOCUMENT, // plain text, the whole file one document (pre-training); always packed
    MC_DATA_TOKENS,   // a token file of `mambac data` (.bin): its ids as one stream, always packed; with a
                      // tokenizer, the file must have been made with it
} mc_data_format;

typedef enum mc_data_eos {
    MC_DATA_EOS_TRL = 0, // appended iff the text column is named "text" (LINES and DOCUMENT count as "text")
    MC_DATA_EOS_ALWAYS,  // appended to every text example (unless its text already ends with the EOS string)
    MC_DATA_EOS_NEVER,
} mc_data_eos;

typedef struct mc_data_opts {
    mc_data_format format;  // MC_DATA_AUTO
    const char *text_field; // JSONL key / CSV column with the text: "text" (SFTConfig.dataset_text_field)
    int64_t max_length;     // 1024 (SFTConfig.max_length): truncation length, or block length when packing;
                            // <= 0 means no truncation (not allowed with packing)
    bool keep_end;          // false: keep the first max_length tokens (truncation_mode "keep_start")
    bool packing;           // false (SFTConfig.packing)
    mc_data_eos eos;        // MC_DATA_EOS_TRL
    int32_t eos_id;         // the EOS token id (the model config's eos_token_id: 0 for GPT-NeoX); only read when an
                            // EOS is appended. Its string is the tokenizer's text for that id
    int64_t n_vocab;        // every id must lie in [0, n_vocab) (the model's vocab_size); 0: the tokenizer's
} mc_data_opts;

// format AUTO, text_field "text", max_length 1024, keep_start, no packing, EOS as TRL, eos_id 0, n_vocab 0.
void mc_data_opts_init(mc_data_opts *opts);

typedef struct mc_dataset mc_dataset; // immutable after load

// Reads path and builds the dataset. tok may be NULL only for pre-tokenized JSON Lines (then n_vocab must be
// given). opts may be NULL (defaults). Errors (messages start with the path and, for a bad example, its line:
// "data.jsonl:17: no field \"quote\""):
//   MC_ERR_IO      the file is missing or unreadable;
//   MC_ERR_FORMAT  a line that is not JSON or not an object, a missing text field or one that is not a string,
//                  input_ids that are not a list of integers, labels of another length, a CSV row with more or
//                  fewer fields than the header, an unclosed quote, no such CSV column, no examples at all;
//   MC_ERR_INVALID a token id outside [0, n_vocab), text that is not UTF-8, bad options (text_field empty,
//                  packing without max_length, unknown extension with MC_DATA_AUTO, an EOS id with no token);
//   MC_ERR_NOMEM.
// Owned: mc_dataset_free.
mc_status mc_dataset_load(const char *path, const mc_tokenizer *tok, const mc_data_opts *opts, mc_dataset **out,
                          mc_error *err);

// The same from len bytes in memory; name stands for the path in messages and chooses the format when AUTO.
mc_status mc_dataset_parse(const char *name, const char *data, size_t len, const mc_tokenizer *tok,
                           const mc_data_opts *opts, mc_dataset **out, mc_error *err);

void mc_dataset_free(mc_dataset *ds); // NULL is a no-op

int64_t mc_dataset_count(const mc_dataset *ds);       // examples (packed blocks when packing), >= 1
int64_t mc_dataset_max_len(const mc_dataset *ds);     // longest example, in tokens
int64_t mc_dataset_n_tokens(const mc_dataset *ds);    // tokens over all examples
int64_t mc_dataset_n_dropped(const mc_dataset *ds);   // examples dropped because no label was left (step 3)
int64_t mc_dataset_n_truncated(const mc_dataset *ds); // examples cut to max_length

// Example i (0 <= i < count): its ids and labels, borrowed (valid while ds lives), and its length. line is the
// 1-based line of the file where it starts (for a JSON array the item's 0-based index; for a packed block, that of
// the example the block starts in). Any output pointer may be NULL. Returns false when i is out of range.
bool mc_dataset_example(const mc_dataset *ds, int64_t i, const int32_t **ids, const int32_t **labels, int64_t *len,
                        int64_t *line);
