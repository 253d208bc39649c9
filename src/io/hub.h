// Hugging Face hub cache lookup (spec §12): turns "ORG/NAME" or a models--ORG--NAME folder into a snapshot folder.
#pragma once

#include "mambac.h"

// The hub cache root: $HF_HUB_CACHE, else $HF_HOME/hub, else $HOME/.cache/huggingface/hub. Owned string (free()).
char *mc_hub_cache_root(void);

// Resolves spec to a folder holding the model files:
//  - an existing folder with config.json: itself;
//  - a folder named models--ORG--NAME (has refs/ and snapshots/): its snapshot for revision;
//  - "ORG/NAME" (not an existing path): <cache root>/models--ORG--NAME, then as above.
// revision NULL means "main"; a 40-hex revision names the commit directly. *dir is owned (free()).
// Without refs/main, a repo with exactly one snapshot uses it. Any other existing folder is returned as is (the caller
// reports the file it misses there). Errors: MC_ERR_INVALID (malformed ORG/NAME or revision, spec is a file),
// MC_ERR_IO (repo, revision or snapshot not in the cache; the message says where it looked), MC_ERR_FORMAT (a refs/
// file without a 40-hex commit), MC_ERR_NOMEM.
mc_status mc_hub_resolve(const char *spec, const char *revision, char **dir, mc_error *err);
