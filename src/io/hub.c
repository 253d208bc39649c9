// Hugging Face hub cache lookup (spec §12.1-12.2), offline only: finds the snapshot folder of a downloaded repo.
// Downloading, and checking which files a snapshot holds, are left to others.
#include "io/hub.h"

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/file.h"

#define HUB_REF_MAX 4096 // a refs/ file holds one 40-hex commit id and maybe a newline
#define HUB_ESC     96

char *mc_hub_cache_root(void) {
    const char *v = getenv("HF_HUB_CACHE");
    if (v != NULL && v[0] != '\0') {
        return strdup(v);
    }
    v = getenv("HF_HOME");
    if (v != NULL && v[0] != '\0') {
        return mc_path_join(v, "hub");
    }
    v = getenv("HOME");
    if (v != NULL && v[0] != '\0') {
        return mc_path_join(v, ".cache/huggingface/hub");
    }
    return NULL;
}

static bool hub_is_commit(const char *s, size_t len) {
    if (len != 40) {
        return false;
    }
    for (size_t i = 0; i < 40; i++) {
        if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f')) {
            return false;
        }
    }
    return true;
}

static bool hub_has_entry(const char *dir, const char *name, bool want_dir) {
    char *p = mc_path_join(dir, name);
    bool ok = p != NULL && (want_dir ? mc_path_is_dir(p) : mc_path_is_file(p));
    free(p);
    return ok;
}

// The only snapshot under repo/snapshots, for a repo whose refs/main is missing. *commit is owned.
static mc_status hub_single_snapshot(const char *repo, char **commit, mc_error *err) {
    *commit = NULL;
    char *snaps = mc_path_join(repo, "snapshots");
    if (snaps == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", repo);
    }
    DIR *d = opendir(snaps);
    free(snaps);
    if (d == NULL) {
        return mc_fail(err, MC_ERR_IO, "%s: no refs/main and no snapshots/ folder; expected a hub cache repo folder",
                       repo);
    }
    int n = 0;
    char found[64] = "";
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
        if (hub_is_commit(e->d_name, strlen(e->d_name))) {
            n++;
            memcpy(found, e->d_name, 41); // 40 hex digits and the NUL
        }
    }
    closedir(d);
    if (n != 1) {
        return mc_fail(err, MC_ERR_IO, "%s: no refs/main and %d snapshots; expected exactly one, or pass a revision",
                       repo, n);
    }
    *commit = strdup(found);
    return *commit == NULL ? mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", repo) : MC_OK;
}

// Reads repo/refs/<revision> into a validated commit id (owned). A missing refs/main falls back to a sole snapshot.
static mc_status hub_read_ref(const char *repo, const char *revision, char **commit, mc_error *err) {
    *commit = NULL;
    char rel[512];
    char rev_esc[HUB_ESC];
    mc_escape(rev_esc, sizeof(rev_esc), revision, strlen(revision));
    if (snprintf(rel, sizeof(rel), "refs/%s", revision) >= (int)sizeof(rel)) {
        return mc_fail(err, MC_ERR_INVALID, "%s: revision %s is too long", repo, rev_esc);
    }
    char *ref = mc_path_join(repo, rel);
    if (ref == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", repo);
    }
    if (!mc_path_is_file(ref)) {
        free(ref);
        if (strcmp(revision, "main") == 0) {
            return hub_single_snapshot(repo, commit, err);
        }
        return mc_fail(err, MC_ERR_IO, "%s: revision %s not in the cache (no refs/%s); download it first", repo,
                       rev_esc, rev_esc);
    }
    char *text = NULL;
    size_t len = 0;
    mc_status st = mc_file_read(ref, HUB_REF_MAX, &text, &len, err);
    if (st == MC_OK) {
        size_t a = 0, b = len;
        while (a < b && isspace((unsigned char)text[a])) {
            a++;
        }
        while (b > a && isspace((unsigned char)text[b - 1])) {
            b--;
        }
        if (!hub_is_commit(text + a, b - a)) {
            char esc[HUB_ESC];
            mc_escape(esc, sizeof(esc), text + a, b - a);
            st = mc_fail(err, MC_ERR_FORMAT, "%s: holds \"%s\"; expected a 40-hex commit id", ref, esc);
        } else {
            *commit = strndup(text + a, 40);
            if (*commit == NULL) {
                st = mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", ref);
            }
        }
    }
    free(text);
    free(ref);
    return st;
}

// A revision names a file under refs/ (branches may hold '/', e.g. "refs/pr/1"), so it must not climb out.
static bool hub_revision_ok(const char *rev) {
    return rev[0] != '\0' && rev[0] != '/' && strstr(rev, "..") == NULL && strchr(rev, '\\') == NULL;
}

// repo is a models--ORG--NAME folder: its snapshots/<commit> for revision (NULL = "main").
static mc_status hub_resolve_repo(const char *repo, const char *revision, char **dir, mc_error *err) {
    const char *rev = revision != NULL ? revision : "main";
    char rev_esc[HUB_ESC];
    mc_escape(rev_esc, sizeof(rev_esc), rev, strlen(rev));
    if (!hub_revision_ok(rev)) {
        return mc_fail(err, MC_ERR_INVALID, "%s: revision \"%s\" is not a branch, tag or commit id", repo, rev_esc);
    }
    char *commit = NULL;
    mc_status st = MC_OK;
    if (hub_is_commit(rev, strlen(rev))) {
        commit = strdup(rev);
        if (commit == NULL) {
            st = mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", repo);
        }
    } else {
        st = hub_read_ref(repo, rev, &commit, err);
    }
    char rel[64 + 40];
    char *snap = NULL;
    if (st == MC_OK) {
        snprintf(rel, sizeof(rel), "snapshots/%s", commit);
        snap = mc_path_join(repo, rel);
        if (snap == NULL) {
            st = mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", repo);
        } else if (!mc_path_is_dir(snap)) {
            st = mc_fail(err, MC_ERR_IO, "%s: revision %s is commit %s, but snapshots/%s is missing; download it first",
                         repo, rev_esc, commit, commit);
        }
    }
    free(commit);
    if (st != MC_OK) {
        free(snap);
        return st;
    }
    *dir = snap;
    return MC_OK;
}

// "ORG/NAME": one '/', non-empty parts of [A-Za-z0-9._-] without "..", as the hub allows.
static bool hub_repo_id_ok(const char *spec) {
    const char *slash = strchr(spec, '/');
    if (slash == NULL || slash == spec || slash[1] == '\0' || strchr(slash + 1, '/') != NULL ||
        strstr(spec, "..") != NULL) {
        return false;
    }
    for (const char *p = spec; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.' && *p != '/') {
            return false;
        }
    }
    return true;
}

static mc_status hub_resolve_id(const char *spec, const char *revision, char **dir, mc_error *err) {
    char esc[HUB_ESC];
    mc_escape(esc, sizeof(esc), spec, strlen(spec));
    if (!hub_repo_id_ok(spec)) {
        return mc_fail(err, MC_ERR_INVALID,
                       "%s: no such file or folder, and not a hub repo id; expected a model folder or ORG/NAME", esc);
    }
    char *root = mc_hub_cache_root();
    if (root == NULL) {
        return mc_fail(err, MC_ERR_IO, "%s: cannot locate the hub cache (HF_HUB_CACHE, HF_HOME and HOME unset)", spec);
    }
    size_t n = strlen(spec) + 16;
    char *name = malloc(n);
    char *repo = NULL;
    mc_status st = MC_OK;
    if (name != NULL) {
        const char *slash = strchr(spec, '/');
        snprintf(name, n, "models--%.*s--%s", (int)(slash - spec), spec, slash + 1);
        repo = mc_path_join(root, name);
    }
    if (repo == NULL) {
        st = mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", spec);
    } else if (!mc_path_is_dir(repo)) {
        st = mc_fail(err, MC_ERR_IO,
                     "%s: not found in the hub cache %s (looked for %s); download it first, e.g. `huggingface-cli "
                     "download %s`, or pass a folder",
                     spec, root, name, spec);
    } else {
        st = hub_resolve_repo(repo, revision, dir, err);
    }
    free(repo);
    free(name);
    free(root);
    return st;
}

mc_status mc_hub_resolve(const char *spec, const char *revision, char **dir, mc_error *err) {
    *dir = NULL;
    if (spec == NULL || spec[0] == '\0') {
        return mc_fail(err, MC_ERR_INVALID, "model: empty path; expected a model folder or ORG/NAME");
    }
    if (mc_path_is_dir(spec)) {
        // A snapshot or plain model folder has config.json; a repo folder has snapshots/. Any other folder is
        // returned as is, so the caller's missing-file message names the file it wanted there.
        if (!hub_has_entry(spec, "config.json", false) && hub_has_entry(spec, "snapshots", true)) {
            return hub_resolve_repo(spec, revision, dir, err);
        }
        *dir = strdup(spec);
        return *dir == NULL ? mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", spec) : MC_OK;
    }
    if (mc_path_is_file(spec)) {
        return mc_fail(err, MC_ERR_INVALID, "%s: is a file; expected a model folder or ORG/NAME", spec);
    }
    return hub_resolve_id(spec, revision, dir, err);
}
