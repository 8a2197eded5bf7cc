"""The ``emjax`` command line (in a subprocess and in-process) and its SVG plot."""

import json
import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from emjax.cli import _svg
from emjax.cli import main

SVG_NS = "{http://www.w3.org/2000/svg}"
#: The maximum-likelihood 2-component full-covariance fit of Old Faithful.
OLD_FAITHFUL_LOGLIK = -1130.26


def run_cli(*args, cwd=None):
    """``python -m emjax ARGS`` in a fresh interpreter: float32, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "emjax", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def printed_loglik(stdout: str) -> float:
    match = re.search(r"^log-likelihood: (-?\d+\.\d+)", stdout, flags=re.MULTILINE)
    assert match, stdout
    return float(match.group(1))


def ellipse_groups(svg_path: Path):
    root = ET.parse(svg_path).getroot()
    assert root.tag == f"{SVG_NS}svg"
    return root, [g for g in root.iter(f"{SVG_NS}g") if g.get("class") == "ellipses"]


def write_blobs_csv(path: Path, n=120, header=True, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, 6.0, 1.0], [0.0, 7.0, -3.0]])
    x = centres[rng.integers(0, 3, n)] + rng.normal(size=(n, 3)) * [1.0, 0.6, 1.0]
    lines = (["height,width,depth"] if header else []) + [",".join(f"{v:.6f}" for v in row) for row in x]
    path.write_text("\n".join(lines) + "\n")
    return x


# -- demo ------------------------------------------------------------------------------


def test_demo_subprocess(tmp_path):
    out = tmp_path / "plot.svg"
    proc = run_cli("demo", "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert printed_loglik(proc.stdout) == pytest.approx(OLD_FAITHFUL_LOGLIK, abs=1e-2)

    # The per-iteration table: EM never decreases the likelihood, and it ends at the final value.
    rows = re.findall(r"^\s+(\d+)\s+(-\d+\.\d+)\s+(-\d+\.\d+)$", proc.stdout, flags=re.MULTILINE)
    assert len(rows) >= 2 and [int(r[0]) for r in rows] == list(range(len(rows)))
    totals = np.array([float(r[1]) for r in rows])
    assert np.all(np.diff(totals) >= -1e-3)
    assert totals[-1] == pytest.approx(OLD_FAITHFUL_LOGLIK, abs=1e-2)
    assert float(rows[-1][2]) == pytest.approx(totals[-1] / 272, abs=1e-5)
    assert "status: converged" in proc.stdout
    assert len(re.findall(r"^component \d+: weight", proc.stdout, flags=re.MULTILINE)) == 2
    assert proc.stdout.count("covariance  [[") == 2
    assert f"wrote {out}" in proc.stdout

    root, groups = ellipse_groups(out)
    assert [g.get("data-component") for g in groups] == ["0", "1"]
    for g in groups:
        sigmas = [e.get("data-sigma") for e in g.iter(f"{SVG_NS}ellipse")]
        assert sigmas == ["1", "2", "3"]
    points = [g for g in root.iter(f"{SVG_NS}g") if g.get("class") == "points"][0]
    assert len(list(points.iter(f"{SVG_NS}circle"))) == 272
    texts = "".join(root.itertext())
    assert "eruptions" in texts and "waiting" in texts


def test_demo_in_process_writes_default_path(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--seed", "3"]) == 0
    stdout = capsys.readouterr().out
    assert printed_loglik(stdout) == pytest.approx(OLD_FAITHFUL_LOGLIK, abs=1e-2)
    assert "wrote emjax-demo.svg" in stdout
    _, groups = ellipse_groups(tmp_path / "emjax-demo.svg")
    assert len(groups) == 2


# -- fit -------------------------------------------------------------------------------


def test_fit_csv_diag_restarts(tmp_path):
    csv_path = tmp_path / "blobs.csv"
    x = write_blobs_csv(csv_path)
    proc = run_cli("fit", csv_path, "-k", "3", "--covariance", "diag", "--restarts", "4")
    assert proc.returncode == 0, proc.stderr
    assert len(re.findall(r"restart\s+\d+: objective", proc.stdout)) == 4
    for word in ("BIC:", "AIC:", "log-likelihood:", "component 3: weight"):
        assert word in proc.stdout

    record = json.loads((tmp_path / "blobs-emjax.json").read_text())
    assert record["columns"] == ["height", "width", "depth"]
    assert record["covariance_type"] == "diag"
    assert record["n_points"] == 120 and record["n_components"] == 3
    weights = np.array(record["weights"])
    assert weights.shape == (3,) and weights.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.array(record["means"]).shape == (3, 3)
    diag = np.array(record["covariances"])
    full = np.array(record["full_covariances"])
    assert diag.shape == (3, 3) and full.shape == (3, 3, 3)
    np.testing.assert_allclose(np.diagonal(full, axis1=1, axis2=2), diag)
    # The three well-separated blobs are found: each centre is close to a fitted mean.
    for centre in ([0.0, 0.0, 0.0], [6.0, 6.0, 1.0], [0.0, 7.0, -3.0]):
        assert np.min(np.linalg.norm(np.array(record["means"]) - centre, axis=1)) < 0.6
    # BIC and AIC differ by p (log N - 2), p = (K - 1) + K D + K D for diagonal covariances.
    p = 2 + 9 + 9
    assert record["bic"] - record["aic"] == pytest.approx(p * (math.log(len(x)) - 2), rel=1e-4)
    assert record["aic"] == pytest.approx(-2 * record["log_likelihood"] + 2 * p, rel=1e-4)
    assert record["status_message"] == "converged" and record["n_iter"] >= 1

    _, groups = ellipse_groups(tmp_path / "blobs-emjax.svg")
    assert len(groups) == 3


def test_fit_in_process_no_header_prior_out_prefix(tmp_path, capsys):
    csv_path = tmp_path / "data.csv"
    write_blobs_csv(csv_path, header=False, seed=1)
    prefix = tmp_path / "results" / "model"
    prefix.parent.mkdir()
    code = main(["fit", str(csv_path), "-k", "3", "--no-header", "--prior", "--out", str(prefix), "--max-iter", "50"])
    assert code == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "MAP-EM" in stdout
    record = json.loads(prefix.with_suffix(".json").read_text())
    assert record["columns"] == ["x1", "x2", "x3"]
    assert record["prior"] == "fraley_raftery" and record["covariance_type"] == "full"
    assert np.array(record["covariances"]).shape == (3, 3, 3)
    assert prefix.with_suffix(".svg").exists()
    assert not (tmp_path / "data-emjax.json").exists()


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, args, expected",
    [
        ("a,b\n1,2\n3,oops\n5,6\n", ["-k", "2"], "line 3, column 2 ('b'): 'oops' is not a finite number"),
        ("1,2\n3,4\n5,6\n", ["-k", "5"], "n_components=5 is larger than the number of data points N=3"),
        ("1,2\n3,4\n5\n", ["-k", "1"], "line 3: 1 field, but the first row has 2"),
        ("a,b\n", ["-k", "1"], "has a header row but no data rows"),
        ("1,2\n3,inf\n", ["-k", "1"], "'inf' is not a finite number"),
        ("1,2\n3,4\n", ["-k", "1", "--covariance", "banana"], "invalid choice: 'banana'"),
        ("1,2\n3,4\n", ["-k", "0"], "expected a positive integer"),
    ],
    ids=["non-numeric", "k>N", "ragged", "header-only", "infinite", "covariance", "k=0"],
)
def test_fit_user_errors(tmp_path, capsys, content, args, expected):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text(content)
    assert main(["fit", str(csv_path), *args]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and expected in err
    assert "Traceback" not in err
    assert not (tmp_path / "bad-emjax.json").exists()


def test_fit_missing_file(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "nope.csv"), "-k", "2"]) == 2
    assert capsys.readouterr().err.strip() == f"emjax: error: {tmp_path / 'nope.csv'}: no such file"


def test_fit_output_directory_checked_before_fitting(tmp_path, capsys):
    csv_path = tmp_path / "ok.csv"
    csv_path.write_text("1,2\n3,4\n5,7\n")
    assert main(["fit", str(csv_path), "-k", "1", "--out", str(tmp_path / "missing" / "x")]) == 2
    captured = capsys.readouterr()
    assert "does not exist" in captured.err and captured.out == ""


def test_error_subprocess_has_message_and_no_traceback(tmp_path):
    csv_path = tmp_path / "words.csv"
    csv_path.write_text("name,value\nfoo,1\nbar,2\n")
    proc = run_cli("fit", csv_path, "-k", "2")
    assert proc.returncode == 2
    assert proc.stderr.startswith("emjax: error: ")
    assert "column 1 ('name'): 'foo' is not a finite number" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "usage: emjax" in err and "demo" in err and "fit" in err


def test_version(capsys):
    import emjax

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"emjax {emjax.__version__}"


# -- the SVG writer --------------------------------------------------------------------


@pytest.mark.parametrize(
    "cov, sx, sy",
    [
        (np.array([[4.0, 0.0], [0.0, 1.0]]), 10.0, 10.0),
        (np.array([[2.0, 1.2], [1.2, 1.0]]), 30.0, 7.0),
        (np.array([[0.17, 0.94], [0.94, 36.0]]), 120.0, 6.0),
    ],
)
def test_pixel_ellipse_is_the_one_sigma_contour(cov, sx, sy):
    (rx, ry), angle = _svg._pixel_ellipse(np.zeros(2), cov, sx, sy)
    assert rx >= ry > 0
    t = np.linspace(0, 2 * np.pi, 50)
    a = math.radians(angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    pixels = rot @ np.stack([rx * np.cos(t), ry * np.sin(t)])
    # Back to data units: x scales by sx, y by sy and points down in pixels.
    data = np.stack([pixels[0] / sx, -pixels[1] / sy])
    mahalanobis = np.einsum("in,ij,jn->n", data, np.linalg.inv(cov), data)
    np.testing.assert_allclose(mahalanobis, 1.0, rtol=1e-9)


def test_svg_uses_first_two_features(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4))
    means = np.stack([x[:25].mean(0), x[25:].mean(0)])
    covs = np.stack([np.cov(x[:25].T), np.cov(x[25:].T)])
    labels = np.repeat([0, 1], 25)
    path = _svg.write_mixture_svg(
        tmp_path / "p.svg", x, labels, [0.5, 0.5], means, covs, feature_names=["a", "b", "c", "d"], title="t <&>"
    )
    root, groups = ellipse_groups(path)
    assert len(groups) == 2 and all(len(list(g.iter(f"{SVG_NS}ellipse"))) == 2 for g in groups)
    texts = "".join(root.itertext())
    assert "features 1 and 2 of 4" in texts and "t <&>" in texts
    with pytest.raises(ValueError, match="at least 2 features"):
        _svg.mixture_svg(x[:, :1], labels, [0.5, 0.5], means[:, :1], covs[:, :1, :1])
