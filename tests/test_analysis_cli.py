"""``einattn analyze``: output formats, options, the DOT graph and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from einattn.cli import main

C4 = """\
# FuseMax Cascade 4
input Q[p, e], K[m, e], V[m, f]
output AV
QK[m, p] = Q[p, e] * K[m, e]
GM[p]    = QK[m, p] :: max(m)
SN[m, p] = exp(QK[m, p] - GM[p])
SD[p]    = SN[m, p]
A[m, p]  = SN[m, p] / SD[p]
AV[p, f] = A[m, p] * V[m, f]
"""

C5 = """\
# FuseMax Cascade 5
input Q[p, e], K[m, e], V[m, f]
param M0 = 16
rank M = M1 * M0
output AV
BQK[m1, m0, p] = Q[p, e] * K[m1 * M0 + m0, e]
LM[m1, p]      = BQK[m1, m0, p] :: max(m0)
RM[0, p]       = -inf
RD[0, p]       = 0
RNV[0, p, f]   = 0
RM[m1 + 1, p]  = max(RM[m1, p], LM[m1, p])
SLN[m1, m0, p] = exp(BQK[m1, m0, p] - RM[m1 + 1, p])
PRM[m1, p]     = exp(RM[m1, p] - RM[m1 + 1, p])
RD[m1 + 1, p]  = SLN[m1, m0, p] + RD[m1, p] * PRM[m1, p]
RNV[m1 + 1, p, f] = SLN[m1, m0, p] * V[m1 * M0 + m0, f] + RNV[m1, p, f] * PRM[m1, p]
AV[p, f]       = RNV[M1, p, f] / RD[M1, p]
"""

SCAN = """\
input q[e], K[t, e]
output S
S[t] = q[e] * K[t, e]
"""


@pytest.fixture
def specs(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, text in (("c4", C4), ("c5", C5), ("scan", SCAN)):
        out[name] = tmp_path / f"{name}.ein"
        out[name].write_text(text)
    return out


def run(capsys, *args) -> tuple[int, str, str]:
    rc = main(["analyze", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_text_report(capsys, specs):
    rc, out, err = run(capsys, specs["c4"], "--size", "M=4096", "--size", "F=64", "--buffer", "16MiB")
    assert rc == 0, err
    assert "3-pass over m (the class of PyTorch, TensorFlow, FLAT, E.T.): live buffer grows with M" in out
    for section in ("Passes per rank", "Barriers", "Fusion groups over m", "Live footprint", "Operations"):
        assert section in out
    assert "F + M + 2 = 4162 elements" in out
    assert "buffer 16 MiB: fits" in out
    assert "GM at 5:1" in out and "QK at 6:16" in out


def test_one_pass_report_with_a_param_override(capsys, specs):
    rc, out, _ = run(capsys, specs["c5"], "--param", "M0=32", "--size", "M=100", "--size", "F=8")
    assert rc == 0
    assert "1-pass over m" in out and "live buffer is free of M" in out
    assert "M1=4" in out and "F + M0 + 2 = 42 elements" in out


def test_json_single_and_several(capsys, specs):
    rc, out, _ = run(capsys, specs["c4"], "--json")
    assert rc == 0
    data = json.loads(out)
    assert data["schema"] == "einattn.analysis/1" and data["passes"]["m"] == 3
    rc, out, _ = run(capsys, specs["c4"], specs["c5"], specs["scan"], "--json", "--size", "M=64")
    assert rc == 0
    many = json.loads(out)
    assert [d["passes"].get("m") for d in many] == [3, 1, None]
    assert [d["sizes"].get("M") for d in many] == [64, 64, None]  # a size goes to the files that have it


def test_rank_buffer_and_element_size(capsys, specs):
    rc, out, _ = run(capsys, specs["c5"], "--rank", "m0", "--json", "--elem-bytes", "4", "--buffer", "100")
    data = json.loads(out)
    assert rc == 0 and data["rank"] == "m0" and data["intensity"]["elem_bytes"] == 4
    assert data["footprint"]["buffer"]["bytes"] == 100


def test_compare(capsys, specs):
    rc, out, _ = run(capsys, "--compare", specs["c4"], specs["c5"], "--size", "F=64")
    assert rc == 0
    assert "passes over m" in out
    assert "at M=1048576" in out and "1048642 elements" in out and "82 elements" in out
    rc, out, _ = run(capsys, "--compare", specs["c4"], specs["c5"], "--json")
    assert rc == 0
    data = json.loads(out)
    assert (data["a"]["passes"]["m"], data["b"]["passes"]["m"]) == (3, 1)


def test_dot_output(capsys, specs, tmp_path):
    out_file = tmp_path / "c4.dot"
    rc, _, err = run(capsys, specs["c4"], "--dot", out_file)
    assert rc == 0 and f"wrote {out_file}" in err
    text = out_file.read_text()
    assert text.startswith('digraph "') and '"GM" -> "SN"' in text and "color=red" in text
    assert "pass 3 over m" in text


def test_dot_render_without_graphviz_is_a_note_not_a_failure(capsys, specs, tmp_path, monkeypatch):
    monkeypatch.setattr("einattn.cli_analyze.shutil.which", lambda name: None)
    rc, _, err = run(capsys, specs["c5"], "--dot", tmp_path / "c5.svg")
    assert rc == 0
    assert (tmp_path / "c5.dot").exists() and not (tmp_path / "c5.svg").exists()
    assert "Graphviz `dot` is not installed" in err


def test_dot_for_several_files_goes_to_a_folder(capsys, specs, tmp_path):
    rc, _, _ = run(capsys, specs["c4"], specs["c5"], "--dot", tmp_path / "graphs")
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "graphs").iterdir()) == ["c4.dot", "c5.dot"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.ein"], "no such file"),
        (["{c4}", "--size", "M"], "bad size `M`"),
        (["{c4}", "--size", "M=1.5"], "must be an integer"),
        (["{c4}", "--size", "Z=3"], "unknown size `Z`"),
        (["{c4}", "--param", "X=3"], "unknown param"),
        (["{c4}", "--buffer", "lots"], "bad buffer size"),
        (["{c4}", "--rank", "z"], "not a rank this spec iterates over"),
        (["{c4}", "--elem-bytes", "0"], "element size"),
        ([], "no file to analyse"),
        (["{c4}", "--compare", "{c4}", "{c5}"], "not both"),
        (["{c4}", "{c5}", "--size", "Z=3"], "belongs to none of the files"),
        (["{c4}", "--size", "M=4", "--size", "M=8"], "size `M` is given twice"),
        (["{c5}", "--param", "M0=4", "--param", "M0=8"], "param `M0` is given twice"),
        (["{c4}", "--tile", "99999999999999999999"], "Invalid value for '--tile'"),
        (["{c4}", "--tile", "0"], "Invalid value for '--tile'"),
    ],
)
def test_user_errors_exit_1_without_traceback(capsys, specs, args, message):
    rc, _, err = run(capsys, *(a.format(**specs) for a in args))
    assert rc == 1
    assert message in err and "Traceback" not in err


def test_a_bad_file_among_several(capsys, specs, tmp_path):
    bad = tmp_path / "bad.ein"
    bad.write_text("input X[i]\noutput Y\nY[i] = X[j]\n")
    rc, out, err = run(capsys, specs["c4"], bad)
    assert rc == 1
    assert "3-pass over m" in out and "bad.ein:3:" in err


def test_help(capsys):
    assert main(["analyze", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--size", "--param", "--rank", "--buffer", "--json", "--dot", "--compare", "--elem-bytes"):
        assert option in out


def test_dot_is_valid_graphviz(capsys, specs, tmp_path):
    pydot = pytest.importorskip("pydot")
    for name in ("c4", "c5"):
        out_file = tmp_path / f"{name}.dot"
        assert run(capsys, specs[name], "--dot", out_file)[0] == 0
        (graph,) = pydot.graph_from_dot_data(out_file.read_text())
        labels = {n.get_name().strip('"') for n in graph.get_nodes()}
        assert {"AV", "input K"} <= labels


def test_analyze_shows_the_class_before_and_after_the_rewrite(capsys):
    causal = str(Path(__file__).resolve().parent.parent / "examples" / "causal.ein")
    assert main(["analyze", causal]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("  3-pass over m")
    assert out[2].startswith('  after the rewrite (passes="auto", tile 64): 1-pass over m')
    assert out[2].endswith("footprint F + M0 + 2")
    assert main(["analyze", causal, "--no-rewrite"]) == 0
    assert "after the rewrite" not in capsys.readouterr().out
    assert main(["analyze", causal, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["passes"]["m"] == 3 and data["after_rewrite"]["passes"]["m"] == 1


# ---- regressions: user errors that were tracebacks, and reports of degenerate cascades ---------------------


def test_dot_into_a_folder_that_does_not_exist_is_a_user_error(capsys, specs, tmp_path):
    for target in ("x.dot", "x.svg"):
        out_file = tmp_path / "no" / "such" / target
        rc, out, err = run(capsys, specs["c4"], "--dot", out_file)
        assert rc == 1, err
        assert f"cannot write {out_file}: there is no folder" in err and "Traceback" not in err
        assert out == ""  # refused before any report is printed
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    rc, _, err = run(capsys, specs["c4"], specs["c5"], "--dot", blocker / "graphs")
    assert rc == 1 and "cannot create the folder" in err and "Traceback" not in err


SCALAR = "input x\noutput y\ny = x * 2\n"
TEACHING1 = "input A[k], B[k]\noutput Z\nY = A[k] * B[k]\nZ = Y * A[k]\n"


@pytest.mark.parametrize("scalar_first", [True, False])
def test_compare_a_cascade_of_scalars_with_a_streamed_one(capsys, tmp_path, scalar_first):
    (tmp_path / "scalar.ein").write_text(SCALAR)
    (tmp_path / "tc1.ein").write_text(TEACHING1)
    files = [tmp_path / "scalar.ein", tmp_path / "tc1.ein"]
    rc, out, err = run(capsys, "--compare", *(files if scalar_first else files[::-1]))
    assert rc == 0, err
    assert "no rank to traverse" in out and "2-pass over k" in out
    assert "at K=1048576" in out and "1048578 elements" in out  # swept over B's rank when A has none
    rc, out, err = run(capsys, "--compare", files[0], files[0])
    assert rc == 0, err
    assert "  at " not in out  # no rank in either: nothing to sweep


def test_a_cascade_that_traverses_nothing(capsys, tmp_path):
    path = tmp_path / "const.ein"
    path.write_text("input X[i]\noutput Y\nY = 3\n")
    rc, out, err = run(capsys, path)
    assert rc == 0, err
    assert "0 passes over i: no Einsum traverses it" in out
    assert "more passes than any class" not in out
    assert "Fusion groups over i: none" in out
    assert "Operations: none" in out and "Operat\n" not in out
    rc, out, _ = run(capsys, path, "--json")
    assert json.loads(out)["classification"].startswith("0 passes over i")
