"""Reviewer (session 19): the front end's negative cases (``tests/conformance_s19/errors.py``) through
``einattn.parse`` and ``einattn analyze``; the footprints of the session's attention cases (docs/analysis.md,
section 4); integer inputs beyond int64 on the NumPy backend; the CLI's exit codes. The conformance cases
themselves run in ``tests/test_conformance_more.py``."""

from __future__ import annotations

import numpy as np
import pytest
from conformance_s19 import CASES
from conformance_s19.errors import ERRORS

import einattn
from einattn.cli import main

BY_NAME = {c["name"]: c for c in CASES}


@pytest.mark.parametrize("name, spec, line, col, message, hint", ERRORS, ids=[e[0] for e in ERRORS])
def test_malformed_spec_is_located(name, spec, line, col, message, hint):
    with pytest.raises(einattn.EinError) as info:
        einattn.parse(spec, f"{name}.ein")
    e = info.value
    assert (e.line, e.column) == (line, col), str(e)
    text = str(e)
    lines = text.splitlines()
    assert lines[0].startswith(f"{name}.ein:{line}:{col}: error: ") and message in lines[0], text
    assert any(row.strip() and set(row.strip()) == {"^"} for row in lines), text  # the caret
    if hint is not None:
        assert any(row.startswith("hint: ") and hint in row for row in lines), text


@pytest.mark.parametrize("name, spec, line, col, message, hint", ERRORS[:8], ids=[e[0] for e in ERRORS[:8]])
def test_cli_analyze_exits_1_on_malformed_spec(name, spec, line, col, message, hint, tmp_path, capsys):
    path = tmp_path / f"{name}.ein"
    path.write_text(spec, encoding="utf-8")
    assert main(["analyze", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{name}.ein:{line}:{col}: error:" in err and "Traceback" not in err


def test_cli_analyze_exits_2_on_internal_error(tmp_path, monkeypatch, capsys):
    import einattn.analysis

    path = tmp_path / "ok.ein"
    path.write_text(BY_NAME["s19_passes_teaching_cascade1_two_passes"]["spec"], encoding="utf-8")
    assert main(["analyze", str(path)]) == 0
    capsys.readouterr()

    def boom(*a, **k):
        raise RuntimeError("bug")

    monkeypatch.setattr(einattn.analysis, "analyze", boom)
    assert main(["analyze", str(path)]) == 2
    assert "internal error" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, footprint, per",
    [
        ("s19_att_linear_noncausal_elu_features", "E*F + E", ["b", "h"]),
        ("s19_att_cascade5_causal_ragged_tiles_guarded", "F + M0 + 2", ["p"]),
        ("s19_att_cascade4_deferred_paper_order_statistics_out", "F + M + 2", ["p"]),
        ("s19_att_gqa_heads_split_by_partition", "F + M + 2", ["g", "r", "p"]),
        ("s19_rec_prefix_attention_per_head_decode", "F + 2", ["h"]),
    ],
)
def test_footprints(name, footprint, per):
    r = einattn.analyze(einattn.parse(BY_NAME[name]["spec"]))
    assert str(r.footprint) == footprint
    assert r.to_json()["footprint"]["per"] == per


def test_classes_of_the_session_cascades():
    def cls(name):
        return einattn.analyze(einattn.parse(BY_NAME[name]["spec"])).classification

    assert cls("s19_att_cascade5_causal_ragged_tiles_guarded").startswith("1-pass over m")
    assert "free of M" in cls("s19_att_cascade5_causal_ragged_tiles_guarded")
    assert cls("s19_att_tileflow_2pass_paper_order_tile_overridden").startswith("2-pass over m")
    assert cls("s19_passes_weights_relative_to_their_max_four").startswith("4-pass over m")
    # a fixed number of splits: the split length, and so the buffer, grows with M
    assert "grows with M" in cls("s19_att_decode_fixed_split_count_merged_by_lse")


SPEC_INT = "input X[i], n : int\noutput Y\nY = X[i] where i < n\n"


@pytest.mark.parametrize(
    "n",
    [2**63, 2**64, np.uint64(2**64 - 1), np.array([2**63], dtype=np.uint64).reshape(())],
    ids=["py_2_63", "py_2_64", "uint64_max", "uint64_array"],
)
def test_numpy_int_input_beyond_int64_is_refused(n):
    # these wrapped to negative numbers (`i < n` kept nothing) or failed with "given object values"
    kern = einattn.compile(SPEC_INT)
    with pytest.raises(einattn.EinError, match="beyond a 64-bit integer's range"):
        kern(X=np.ones(3), n=n)
    assert kern(X=np.ones(3), n=np.uint64(2**63 - 1)) == 3.0
