// config.json parsing: both layouts resolve to the same config, defaults apply, and malformed or unsupported
// configs fail with a one-line message naming the file and the field.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "check.h"
#include "mambac.h"
#include "model/model.h"

static mc_status parse(const char *json, mc_config *cfg, mc_error *err) {
    return mc_config_from_json(json, strlen(json), "cfg.json", cfg, err);
}

// mamba-130m-hf's config.json (spec §1.2) and the original state-spaces/mamba-130m one (§1.3) describe one model.
static void test_hf_and_original_agree(void **unused) {
    const char *hf = "{\"architectures\":[\"MambaForCausalLM\"],\"bos_token_id\":0,\"conv_kernel\":4,\"d_inner\":1536,"
                     "\"d_model\":768,\"eos_token_id\":0,\"expand\":2,\"fused_add_norm\":true,\"hidden_act\":\"silu\","
                     "\"hidden_size\":768,\"initializer_range\":0.1,\"intermediate_size\":1536,"
                     "\"layer_norm_epsilon\":1e-05,\"model_type\":\"mamba\",\"n_layer\":24,\"num_hidden_layers\":24,"
                     "\"pad_token_id\":0,\"pad_vocab_size_multiple\":8,\"rescale_prenorm_residual\":false,"
                     "\"residual_in_fp32\":true,\"rms_norm\":true,\"ssm_cfg\":{},\"state_size\":16,"
                     "\"time_step_floor\":0.0001,\"time_step_init_scheme\":\"random\",\"time_step_max\":0.1,"
                     "\"time_step_min\":0.001,\"time_step_rank\":48,\"time_step_scale\":1.0,"
                     "\"torch_dtype\":\"float32\",\"use_bias\":false,\"use_cache\":true,\"use_conv_bias\":true,"
                     "\"vocab_size\":50280}";
    const char *orig = "{\"d_model\": 768, \"n_layer\": 24, \"vocab_size\": 50277, \"ssm_cfg\": {}, \"rms_norm\": true,"
                       " \"residual_in_fp32\": true, \"fused_add_norm\": true, \"pad_vocab_size_multiple\": 8}";
    mc_config a, b;
    mc_error err = { 0 };
    assert_int_equal(parse(hf, &a, &err), MC_OK);
    assert_int_equal(parse(orig, &b, &err), MC_OK);
    assert_int_equal(a.vocab_size, b.vocab_size);
    assert_int_equal(a.hidden_size, b.hidden_size);
    assert_int_equal(a.intermediate_size, b.intermediate_size);
    assert_int_equal(a.state_size, b.state_size);
    assert_int_equal(a.time_step_rank, b.time_step_rank);
    assert_int_equal(a.conv_kernel, b.conv_kernel);
    assert_int_equal(a.num_hidden_layers, b.num_hidden_layers);
    assert_int_equal(a.use_bias, b.use_bias);
    assert_int_equal(a.use_conv_bias, b.use_conv_bias);
    assert_int_equal(a.tie_word_embeddings, b.tie_word_embeddings);
    assert_true(a.layer_norm_epsilon == b.layer_norm_epsilon);
    assert_false(a.original_format);
    assert_true(b.original_format);
}

// "auto" and an absent time_step_rank both resolve like an explicit ceil(H/16); intermediate_size wins over expand.
static void test_auto_and_explicit(void **unused) {
    mc_config a, b, c;
    mc_error err = { 0 };
    assert_int_equal(parse("{\"model_type\":\"mamba\",\"hidden_size\":40,\"time_step_rank\":\"auto\"}", &a, &err),
                     MC_OK);
    assert_int_equal(parse("{\"model_type\":\"mamba\",\"hidden_size\":40}", &b, &err), MC_OK);
    assert_int_equal(parse("{\"model_type\":\"mamba\",\"hidden_size\":40,\"time_step_rank\":3,"
                           "\"intermediate_size\":72}", &c, &err), MC_OK);
    assert_int_equal(a.time_step_rank, b.time_step_rank);
    assert_int_equal(a.time_step_rank, (40 + 15) / 16);
    assert_int_equal(a.intermediate_size, a.expand * 40);
    assert_int_equal(c.time_step_rank, 3);
    assert_int_equal(c.intermediate_size, 72);
}

static void expect_error(const char *json, mc_status code, const char *needle) {
    mc_config cfg;
    mc_error err = { 0 };
    mc_status st = parse(json, &cfg, &err);
    if (st != code || strstr(err.msg, needle) == NULL || strstr(err.msg, "cfg.json") == NULL) {
        print_error("config %s: got status %d message '%s', wanted %d containing '%s'\n", json, st, err.msg, code,
                    needle);
        fail();
    }
    assert_null(strchr(err.msg, '\n'));
}

static void test_malformed(void **unused) {
    expect_error("", MC_ERR_FORMAT, "JSON");
    expect_error("{\"model_type\":\"mamba\",", MC_ERR_FORMAT, "JSON");
    expect_error("[1,2]", MC_ERR_FORMAT, "object");
    expect_error("{\"foo\":1}", MC_ERR_FORMAT, "neither");
    expect_error("{\"model_type\":\"mamba\",\"hidden_size\":0}", MC_ERR_FORMAT, "hidden_size");
    expect_error("{\"model_type\":\"mamba\",\"hidden_size\":-5}", MC_ERR_FORMAT, "hidden_size");
    expect_error("{\"model_type\":\"mamba\",\"hidden_size\":1.5}", MC_ERR_FORMAT, "hidden_size");
    expect_error("{\"model_type\":\"mamba\",\"hidden_size\":\"768\"}", MC_ERR_FORMAT, "hidden_size");
    expect_error("{\"model_type\":\"mamba\",\"state_size\":1e300}", MC_ERR_FORMAT, "state_size");
    expect_error("{\"model_type\":\"mamba\",\"vocab_size\":0}", MC_ERR_FORMAT, "vocab_size");
    expect_error("{\"model_type\":\"mamba\",\"num_hidden_layers\":0}", MC_ERR_FORMAT, "num_hidden_layers");
    expect_error("{\"model_type\":\"mamba\",\"conv_kernel\":0}", MC_ERR_FORMAT, "conv_kernel");
    expect_error("{\"model_type\":\"mamba\",\"time_step_rank\":\"big\"}", MC_ERR_FORMAT, "time_step_rank");
    expect_error("{\"model_type\":\"mamba\",\"time_step_rank\":0}", MC_ERR_FORMAT, "time_step_rank");
    expect_error("{\"model_type\":\"mamba\",\"layer_norm_epsilon\":-1}", MC_ERR_FORMAT, "layer_norm_epsilon");
    expect_error("{\"model_type\":\"mamba\",\"use_bias\":\"yes\"}", MC_ERR_FORMAT, "use_bias");
    expect_error("{\"model_type\":\"mamba\",\"eos_token_id\":99999,\"vocab_size\":100}", MC_ERR_FORMAT, "eos");
    expect_error("{\"model_type\":\"mamba\",\"hidden_act\":\"gelu\"}", MC_ERR_UNSUPPORTED, "hidden_act");
    expect_error("{\"model_type\":\"mamba2\"}", MC_ERR_UNSUPPORTED, "model_type");
    expect_error("{\"d_model\":64,\"n_layer\":2,\"d_intermediate\":128}", MC_ERR_UNSUPPORTED, "d_intermediate");
    expect_error("{\"d_model\":64,\"n_layer\":2,\"rms_norm\":false}", MC_ERR_UNSUPPORTED, "rms_norm");
    expect_error("{\"d_model\":64,\"n_layer\":2,\"ssm_cfg\":{\"layer\":\"Mamba2\"}}", MC_ERR_UNSUPPORTED, "Mamba2");
    expect_error("{\"d_model\":64,\"n_layer\":2,\"attn_layer_idx\":[1]}", MC_ERR_UNSUPPORTED, "attn_layer_idx");
    expect_error("{\"d_model\":64,\"n_layer\":2,\"ssm_cfg\":7}", MC_ERR_FORMAT, "ssm_cfg");
    expect_error("{\"model_type\":\"mamba\",\"vocab_size\":64,\"eos_token_id\":99}", MC_ERR_FORMAT,
                 "outside the vocabulary of 64");
}

static void test_missing_file(void **unused) {
    mc_config cfg;
    mc_error err = { 0 };
    assert_int_equal(mc_config_load("/nonexistent/config.json", &cfg, &err), MC_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/config.json"));
}

// Missing arguments are refused with a message, not dereferenced.
static void test_null_arguments(void **unused) {
    mc_config cfg;
    mc_error err = { 0 };
    assert_int_equal(mc_config_load(NULL, &cfg, &err), MC_ERR_INVALID);
    assert_int_equal(mc_config_load("/nonexistent/config.json", NULL, &err), MC_ERR_INVALID);
    assert_int_equal(mc_config_preset(NULL, &cfg, &err), MC_ERR_INVALID);
    assert_int_equal(mc_config_preset("130m", NULL, &err), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "cfg"));
    char *dir = NULL;
    assert_int_equal(mc_model_resolve_dir("/nonexistent", NULL, NULL, &err), MC_ERR_INVALID);
    assert_int_equal(mc_model_resolve_dir(NULL, NULL, &dir, &err), MC_ERR_INVALID);
    assert_null(dir);
    assert_int_equal(mc_model_load("/nonexistent", NULL, NULL, &err), MC_ERR_INVALID);
    mc_generate_opts_init(NULL, NULL); // nothing to fill: returns
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hf_and_original_agree),
        cmocka_unit_test(test_auto_and_explicit),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_null_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
