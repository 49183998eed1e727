"""`scalesim serve` argument handling, without starting a server."""

from __future__ import annotations

import socket

import pytest

from scalesim import paths
from scalesim.engine.sglang.launch import (
    ScaleSimOptions,
    ServeError,
    check_model_path,
    check_port_free,
    cpu_runs_bf16,
    plugin_filter,
    split_argv,
    with_defaults,
)


def test_split_argv_keeps_sglang_args_in_order():
    opts, rest = split_argv(["--model-path", "m", "--scalesim-disable", "--port", "1"])
    assert opts == ScaleSimOptions(disable=True)
    assert rest == ["--model-path", "m", "--port", "1"]
    assert split_argv(["--port", "1"]) == (ScaleSimOptions(disable=False), ["--port", "1"])


def test_split_argv_rejects_unknown_scalesim_option():
    with pytest.raises(ServeError, match=r"unknown ScaleSim option --scalesim-nope \(valid: --scalesim-disable\)"):
        split_argv(["--scalesim-nope"])


def test_cpu_defaults_added_only_where_absent():
    argv = with_defaults(["--model-path", "m", "--attention-backend", "sdpa"], has_gpu=False, bf16=True)
    assert argv == [
        "--model-path", "m", "--attention-backend", "sdpa",
        "--device", "cpu",
        "--cuda-graph-backend-decode", "disabled",
        "--cuda-graph-backend-prefill", "disabled",
        "--lora-backend", "torch_native",
        "--sleep-on-idle",
    ]
    assert with_defaults(["--model-path=m", "--device=cpu"], has_gpu=False)[:2] == ["--model-path=m", "--device=cpu"]


def test_a_cpu_without_native_bf16_serves_in_float32_unless_a_dtype_is_given():
    assert with_defaults(["--model-path", "m"], has_gpu=False, bf16=False)[-2:] == ["--dtype", "float32"]
    assert "--dtype" not in with_defaults(["--model-path", "m"], has_gpu=False, bf16=True)
    assert with_defaults(["--model-path", "m", "--dtype=bfloat16"], has_gpu=False, bf16=False).count("float32") == 0
    assert "--dtype" not in with_defaults(["--model-path", "m"], has_gpu=True, bf16=False)
    # AVX2 only (an AMD EPYC here): float32; AVX-512 with bf16, or AMX: the model's bf16.
    assert not cpu_runs_bf16(frozenset({"fpu", "avx2", "fma"}))
    assert cpu_runs_bf16(frozenset({"avx2", "avx512f", "avx512_bf16"})) and cpu_runs_bf16(frozenset({"amx_bf16"}))
    assert cpu_runs_bf16(None)  # flags unknown (not Linux, or not x86): the model's own type


def test_a_bf16_model_served_in_float32_keeps_a_bf16_kv_cache_unless_told(tmp_path):
    bf16_model, fp32_model = tmp_path / "bf16", tmp_path / "fp32"
    for model, dtype in ((bf16_model, '"dtype": "bfloat16"'), (fp32_model, '"torch_dtype": "float32"')):
        model.mkdir()
        (model / "config.json").write_text("{" + dtype + "}")
    argv = with_defaults(["--model-path", str(bf16_model)], has_gpu=False, bf16=False)
    assert argv[-4:] == ["--dtype", "float32", "--kv-cache-dtype", "bfloat16"]
    argv = with_defaults([f"--model-path={bf16_model}"], has_gpu=False, bf16=False)
    assert argv[-2:] == ["--kv-cache-dtype", "bfloat16"]
    assert with_defaults(["--model-path", str(fp32_model)], has_gpu=False, bf16=False)[-2:] == ["--dtype", "float32"]
    # The user's choice wins: a KV type of their own, or a dtype of their own (then neither default).
    told = with_defaults(["--model-path", str(bf16_model), "--kv-cache-dtype", "auto"], has_gpu=False, bf16=False)
    assert told.count("--kv-cache-dtype") == 1 and told[-2:] == ["--dtype", "float32"]
    assert "--kv-cache-dtype" not in with_defaults(["--model-path", str(bf16_model), "--dtype", "float32"],
                                                   has_gpu=False, bf16=False)
    # Native bf16, a GPU, or a model whose type cannot be read ("m": no config.json): nothing.
    assert "--kv-cache-dtype" not in with_defaults(["--model-path", str(bf16_model)], has_gpu=False, bf16=True)
    assert "--kv-cache-dtype" not in with_defaults(["--model-path", str(bf16_model)], has_gpu=True, bf16=False)
    assert "--kv-cache-dtype" not in with_defaults(["--model-path", "m"], has_gpu=False, bf16=False)
    # The embedded default model is bf16.
    assert with_defaults([], has_gpu=False, bf16=False)[-2:] == ["--kv-cache-dtype", "bfloat16"]


def test_gpu_gets_no_cpu_defaults_and_default_model_when_none_given():
    assert with_defaults([], has_gpu=True) == ["--model-path", str(paths.default_model_path())]
    assert with_defaults(["--model", "x"], has_gpu=True) == ["--model", "x"]


@pytest.mark.parametrize(
    "current, enabled, expected",
    [
        ("other", True, "other,scalesim-device,scalesim"),
        ("other,scalesim", False, "other,scalesim-device"),
        ("scalesim", False, "scalesim-device"),  # stock SGLang, with the CPU host-pool seam
        (" a , scalesim ,b,scalesim-device", True, "a,b,scalesim-device,scalesim"),
    ],
)
def test_plugin_filter(current, enabled, expected):
    assert plugin_filter(current, enabled=enabled) == expected


def test_plugin_filter_without_variable_lists_installed_plugins():
    # With the variable unset SGLang loads everything; ours must be the only one named or dropped.
    assert plugin_filter(None, enabled=True).split(",")[-1] == "scalesim"
    assert plugin_filter(None, enabled=False).split(",")[-1] == "scalesim-device"
    assert "scalesim" not in plugin_filter(None, enabled=False).split(",")


def test_model_path_checks(tmp_path):
    with pytest.raises(ServeError, match="does not exist"):
        check_model_path(str(tmp_path / "missing"))
    with pytest.raises(ServeError, match="has no config.json"):
        check_model_path(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    check_model_path(str(tmp_path))
    check_model_path("some-org/some-model")  # a hub id is left to SGLang when online


def test_model_path_hub_id_refused_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ServeError, match="some-org/some-model does not exist"):
        check_model_path("some-org/some-model")


def test_port_checks():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServeError, match=f"port {port} on 127.0.0.1 is not available"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)


def test_host_tier_on_cpu_gets_the_direct_layer_first_transfer_unless_chosen():
    argv = with_defaults(["--model-path", "m", "--enable-hierarchical-cache"], has_gpu=False, bf16=True)
    assert argv[-4:] == ["--hicache-io-backend", "direct", "--hicache-mem-layout", "layer_first"]
    chosen = with_defaults(["--model-path", "m", "--enable-hierarchical-cache", "--hicache-io-backend", "kernel"],
                           has_gpu=False)
    assert chosen.count("--hicache-io-backend") == 1 and "layer_first" in chosen
    assert "--hicache-io-backend" not in with_defaults(["--model-path", "m"], has_gpu=False)
    assert "--hicache-io-backend" not in with_defaults(["--model-path", "m", "--enable-hierarchical-cache"],
                                                       has_gpu=True)
