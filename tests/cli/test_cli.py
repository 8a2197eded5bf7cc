"""The ``emjax`` command line (in a subprocess and in-process) and its SVG plot.

Compile time dominates: the fits share small shapes (40 rows, 2 or 3 columns,
K = 2, ``--max-iter 20``), and the bad-cell errors are raised before anything
compiles.
"""

import csv
import json
import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import emjax
from emjax.cli import _svg
from emjax.cli import main
from emjax.cli._progress import FitProgress

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


def test_fit_csv_diag_restarts(tmp_path, capsys):
    csv_path = tmp_path / "blobs.csv"
    x = write_blobs_csv(csv_path)
    code = main(["fit", str(csv_path), "-k", "3", "--covariance", "diag", "--restarts", "4"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert len(re.findall(r"restart\s+\d+: objective", stdout)) == 4
    for word in ("BIC:", "AIC:", "log-likelihood:", "component 3: weight"):
        assert word in stdout

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
        ("a,b\n1,2\n\n3,4,5\n", ["-k", "1"], "line 4: 3 fields, but the header has 2"),
        ("a,b\n", ["-k", "1"], "has a header row but no data rows"),
        ("1,2\n3,inf\n", ["-k", "1"], "'inf' is not a finite number"),
        ("1,2\n3,4\n", ["-k", "1", "--covariance", "banana"], "invalid choice: 'banana'"),
        ("1,2\n3,4\n", ["-k", "0"], "expected a positive integer"),
    ],
    ids=["non-numeric", "k>N", "ragged", "ragged-header", "header-only", "infinite", "covariance", "k=0"],
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


def test_error_has_message_and_no_traceback(tmp_path, capsys):
    csv_path = tmp_path / "words.csv"
    csv_path.write_text("name,value\nfoo,1\nbar,2\n")
    assert main(["fit", str(csv_path), "-k", "2"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("emjax: error: ")
    assert "column 1 ('name'): 'foo' is not a finite number" in stderr
    assert "Traceback" not in stderr


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


def test_criterion_svg_lines_points_and_breaks():
    svg = _svg.criterion_svg(
        [1, 2, 3, 4],
        {"A": [10.0, 5.0, 7.0, 9.0], "B <&>": [12.0, np.nan, 6.0, 8.0]},
        criterion="BIC",
        best=("A", 2),
        irregular={"B <&>": [False, False, True, False]},
    )
    root = ET.fromstring(svg)
    series = [g for g in root.iter(f"{SVG_NS}g") if g.get("class") == "series"]
    assert [g.get("data-structure") for g in series] == ["A", "B <&>"]
    # B's missing value at K = 2 breaks its line in two.
    assert [len(list(g.iter(f"{SVG_NS}polyline"))) for g in series] == [1, 2]
    points = [[c for c in g.iter(f"{SVG_NS}circle") if c.get("class") == "point"] for g in series]
    assert [[p.get("data-k") for p in ps] for ps in points] == [["1", "2", "3", "4"], ["1", "3", "4"]]
    assert points[1][1].get("fill") == "white"  # the irregular fit is hollow
    best = [c for c in root.iter(f"{SVG_NS}circle") if c.get("class") == "best"]
    assert len(best) == 1 and best[0].get("cx") == points[0][1].get("cx")
    # Lower is drawn lower: y grows downwards in SVG.
    ys = [float(p.get("cy")) for p in points[0]]
    assert ys[1] > ys[2] > ys[3] > ys[0]
    with pytest.raises(ValueError, match="one per K"):
        _svg.criterion_svg([1, 2], {"A": [1.0]})


# -- every family, every structure option: fit, save, load, predict ----------------------------

N = 40


def _write_csv(path: Path, x, names=None, missing=()):
    """``x`` as CSV with a header; cells in ``missing`` ((row, col) pairs) left empty."""
    names = names or [f"c{j}" for j in range(x.shape[1])]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for i, row in enumerate(x):
            w.writerow(["" if (i, j) in missing else (f"{v:.6f}" if not float(v).is_integer() else str(int(v)))
                        for j, v in enumerate(row)])
    return path


def family_data(name):
    """A small two-class sample of family ``name``: ``(x, extra CLI args)``."""
    rng = np.random.default_rng(7)
    z = np.arange(N) % 2
    if name in ("gaussian", "student"):
        x = np.array([[0.0, 0.0], [5.0, 4.0]])[z] + rng.normal(size=(N, 2)) * [[1.0, 0.5]]
        # EEV: one of mclust's structures beyond the four types (a closed-form M-step).
        return x, (["--covariance", "EEV"] if name == "gaussian" else ["--covariance", "diag", "--dof", "5"])
    if name == "bernoulli":
        p = np.array([[0.9, 0.8, 0.1], [0.1, 0.2, 0.9]])
        return (rng.random((N, 3)) < p[z]).astype(float), []
    if name == "categorical":
        return ((z[:, None] + rng.integers(0, 2, (N, 3))) % 3).astype(float), []
    if name == "multinomial":
        p = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])
        return np.stack([rng.multinomial(10, p[c]) for c in z]).astype(float), []
    if name == "binomial":
        return rng.binomial(10, np.array([[0.2, 0.7], [0.8, 0.3]])[z]).astype(float), ["--trials", "10"]
    return rng.poisson(np.array([[1.0, 6.0], [7.0, 2.0]])[z]).astype(float), []


FAMILIES = ["gaussian", "student", "bernoulli", "categorical", "multinomial", "binomial", "poisson"]
PARAM_FIELDS = {
    "gaussian": "covariances", "student": "dofs", "bernoulli": "means", "categorical": "probs",
    "multinomial": "probs", "binomial": "probs", "poisson": "rates",
}


def read_predictions(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=float)


@pytest.mark.parametrize("family", FAMILIES)
def test_fit_every_family_then_predict(tmp_path, capsys, family):
    x, extra = family_data(family)
    data = _write_csv(tmp_path / f"{family}.csv", x)
    model_path = tmp_path / "model.emjax"
    code = main(["fit", str(data), "-k", "2", "--family", family, *extra, "--max-iter", "20", "--output", str(model_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "component 2: weight" in out and "log-likelihood:" in out and f"wrote {model_path}" in out
    record = json.loads((tmp_path / f"{family}-emjax.json").read_text())
    assert record["family"] == family and record["n_components"] == 2 and record["model_file"] == str(model_path)
    assert np.shape(record[PARAM_FIELDS[family]])[0] in (2, 1)
    root, groups = ellipse_groups(tmp_path / f"{family}-emjax.svg")
    assert len(groups) == 2

    # The model file: emjax.load gives the model and the FitResult.
    model, result = emjax.load(model_path)
    assert isinstance(model, emjax.Mixture) and model.n_components == 2
    assert isinstance(result, emjax.FitResult)
    assert type(model.family).__name__ == {"student": "StudentT"}.get(family, family.capitalize())
    expected = np.asarray(model.predict(result.params, x))
    assert np.isclose(float(np.sum(model.log_prob(result.params, x))), record["log_likelihood"], rtol=1e-6)

    # emjax predict writes the same labels, posteriors summing to 1, the log density.
    pred = tmp_path / "pred.csv"
    assert main(["predict", str(model_path), str(data), "--output", str(pred)]) == 0, capsys.readouterr().err
    header, values = read_predictions(pred)
    assert header == ["label", "posterior_0", "posterior_1", "log_density"]
    np.testing.assert_array_equal(values[:, 0].astype(int), expected)
    np.testing.assert_allclose(values[:, 1:3].sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(values[:, 3], np.asarray(model.log_prob(result.params, x)), rtol=1e-6)
    assert f"wrote {pred}" in capsys.readouterr().out


def test_fit_missing_then_predict_to_stdout(tmp_path, capsys):
    x, _ = family_data("gaussian")
    holes = {(1, 0), (5, 1), (12, 0)}
    data = _write_csv(tmp_path / "holes.csv", x, names=["w", "h"], missing=holes)
    code = main(["fit", str(data), "-k", "2", "--covariance", "diag", "--missing", "--max-iter", "20", "--restarts", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "3 missing entries in 3 rows" in out and "missing entries at random" in out
    model, result = emjax.load(tmp_path / "holes-emjax.emjax")
    assert model.missing
    # Without --missing the first empty cell is named.
    assert main(["fit", str(data), "-k", "2"]) == 2
    assert "holes.csv, line 3, column 1 ('w'): an empty field (a missing value)" in capsys.readouterr().err
    # predict reads the missing cells of a model fitted with --missing; CSV on stdout.
    assert main(["predict", str(tmp_path / "holes-emjax.emjax"), str(data)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "label,posterior_0,posterior_1,log_density" and len(lines) == N + 1
    xm = x.copy()
    for i, j in holes:
        xm[i, j] = np.nan
    labels = [int(line.split(",")[0]) for line in lines[1:]]
    np.testing.assert_array_equal(labels, np.asarray(model.predict(result.params, xm)))


@pytest.mark.parametrize("algorithm", ["incremental", "stepwise", "stochastic"])
def test_fit_algorithms(tmp_path, capsys, algorithm):
    x, _ = family_data("poisson")
    data = _write_csv(tmp_path / "counts.csv", x)
    code = main(["fit", str(data), "-k", "2", "--family", "poisson", "--algorithm", algorithm, "--max-iter", "20"])
    out, err = capsys.readouterr()
    assert code == 0, err
    record = json.loads((tmp_path / "counts-emjax.json").read_text())
    assert record["algorithm"] == algorithm
    if algorithm == "stochastic":
        # A sampled algorithm's tol defaults to 0: it runs --max-iter steps.
        assert record["n_iter"] == 20 and record["status_message"].startswith("reached max_iter")


def test_select_table_plot_and_model(tmp_path, capsys):
    x, _ = family_data("gaussian")
    data = _write_csv(tmp_path / "two.csv", x)
    code = main(["select", str(data), "--kmax", "3", "--covariance", "diag", "--structure", "spherical", "--restarts", "1",
                 "--max-iter", "20", "--out", str(tmp_path / "sel")])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = re.findall(r"^(Gaussian\(\w+\))\s+(\d)\s", out, flags=re.MULTILINE)
    assert rows == [(f"Gaussian({s})", str(k)) for s in ("diag", "spherical") for k in (1, 2, 3)]
    assert out.count("<- best") == 1 and "chosen: Gaussian(" in out
    record = json.loads((tmp_path / "sel.json").read_text())
    assert len(record["table"]) == 6 and record["criterion"] == "bic"
    best = record["best"]
    assert best["bic"] == min(r["bic"] for r in record["table"])

    root = ET.parse(tmp_path / "sel.svg").getroot()
    assert len(list(root.iter(f"{SVG_NS}polyline"))) == 2
    points = [c for c in root.iter(f"{SVG_NS}circle") if c.get("class") == "point"]
    assert len(points) == 6 and len([c for c in root.iter(f"{SVG_NS}circle") if c.get("class") == "best"]) == 1

    model, result = emjax.load(tmp_path / "sel.emjax")
    assert model.n_components == best["k"] and model.family.covariance_type == best["structure"][9:-1]


def test_progress_line(tmp_path, capsys):
    x, _ = family_data("poisson")
    data = _write_csv(tmp_path / "counts.csv", x)
    args = ["fit", str(data), "-k", "2", "--family", "poisson", "--max-iter", "20"]
    assert main([*args, "--progress"]) == 0
    out, err = capsys.readouterr()
    # The fit's verbose lines are captured, not printed; the last state stays on stderr.
    assert "objective" not in out.split("best restart")[0].replace("restart   0: objective", "")
    assert re.search(r"emjax fit: done, \d+ iterations, best objective -\d", err), err
    assert main([*args, "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert main([*args, "--progress", "--quiet"]) == 2
    assert "not allowed with" in capsys.readouterr().err


def test_progress_parses_verbose_lines(capsys):
    progress = FitProgress("emjax select", "iterations", max_iter=50, n_fits=2)
    progress.t0 = 0.0
    progress.write("restart   0  iter     0  objective -10  per point -1\nrestart   1  iter     0  objective -9  per")
    progress.write(" point -0.9\nrestart   0  iter     1  objective -8  per point -0.8\nsomething else\n")
    assert "something else" not in capsys.readouterr().out  # no stdout captured outside the context
    text = progress._text(1.0)
    assert "(fit 1/2): iteration 1/50, 1/2 restarts running, best objective -8 (-0.8 per point)" in text
    progress.write("restart   0  iter     0  objective -5  per point -0.5\n")  # the next fit starts
    assert "(fit 2/2): iteration 0/50, 1/1 restarts running" in progress._text(2.0)


# -- errors name the line and the column -------------------------------------------------------


@pytest.mark.parametrize(
    "content, args, expected",
    [
        ("u,v\n1,2\n3,-1\n", ["--family", "poisson"], "line 3, column 2 ('v'): the data must hold non-negative counts"),
        ("u,v\n1,2\n\n3,1.5\n", ["--family", "poisson"], "line 4, column 2 ('v'): the data must hold integer-valued"),
        ("a,b,c\n1,2,3\n0,-2,5\n", ["--family", "multinomial"], "line 3, column 2 ('b'): the data must hold non-negative"),
        ("s,t\n1,2\n3,11\n", ["--family", "binomial", "--trials", "10"],
         "line 3, column 2 ('t'): the data must hold success counts in 0..n_trials=10"),
        ("a,b,c\n1,0,1\n0,2,1\n", ["--family", "bernoulli"], "line 3, column 2 ('b'): Bernoulli data must be binary"),
        ("a,b\n0,1\n2,3\n", ["--family", "categorical", "--categories", "3"],
         "line 3, column 2 ('b'): Categorical data must be codes in 0..2"),
        ("a,b\n0,1\n2,-1\n", ["--family", "categorical"], "line 3, column 2 ('b'): Categorical data must be codes"),
        ("a,b\n1,2\n3,\n", [], "line 3, column 2 ('b'): an empty field (a missing value)"),
        ("a,b\n1,2\n3,nan\n", [], "line 3, column 2 ('b'): 'nan' (a missing value)"),
        ("a,b\n1,2\n3,-inf\n", [], "line 3, column 2 ('b'): '-inf' is not a finite number"),
        ("a,b\n1,2\n,NA\n4,5\n", ["--missing"], "line 3: this row has every entry missing"),
        ("a,b\n1,2\n3,4\n", ["--family", "binomial"], "--family binomial needs --trials N"),
        ("a,b\n1,2\n3,4\n", ["--family", "poisson", "--covariance", "diag"], "--covariance applies to --family gaussian"),
        ("a,b\n1,2\n3,4\n", ["--family", "multinomial", "--missing"], "do not support missing entries"),
    ],
    ids=["negative-poisson", "fraction-poisson", "negative-multinomial", "binomial>trials", "bernoulli-2",
         "category-range", "category-negative", "empty", "nan", "minus-inf", "all-missing", "no-trials",
         "covariance-poisson", "missing-multinomial"],
)
def test_bad_cells_name_line_and_column(tmp_path, capsys, content, args, expected):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text(content)
    assert main(["fit", str(csv_path), "-k", "1", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emjax: error: ") and expected in err, err
    assert "Traceback" not in err and not (tmp_path / "bad-emjax.json").exists()


def test_predict_errors(tmp_path, capsys):
    model = emjax.Mixture(emjax.Poisson(), 2)
    params = emjax.MixtureParams(np.array([0.5, 0.5]), emjax.PoissonParams(np.array([[1.0, 2.0], [5.0, 1.0]])))
    emjax.save(tmp_path / "m.emjax", model, params)
    cases = [
        ("u,v,w\n1,2,3\n", "line 1, column 3 ('w'): 3 columns, but the model in"),
        ("1\n2\n", "line 1: 1 column, but the model in"),
        ("u,v\n1,2\n3,-4\n", "line 3, column 2 ('v'): the data must hold non-negative counts"),
        ("u,v\n1,2\n3,\n", "line 3, column 2 ('v'): an empty field (a missing value)"),
    ]
    for content, expected in cases:
        (tmp_path / "d.csv").write_text(content)
        assert main(["predict", str(tmp_path / "m.emjax"), str(tmp_path / "d.csv")]) == 2
        err = capsys.readouterr().err
        assert expected in err, err
    (tmp_path / "junk.emjax").write_text("not a model")
    assert main(["predict", str(tmp_path / "junk.emjax"), str(tmp_path / "d.csv")]) == 2
    assert "cannot read the model file" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "none.emjax"), str(tmp_path / "d.csv")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_progress_elapsed_line_on_a_terminal(monkeypatch):
    """Without --progress a terminal sees the elapsed time, redrawn in place, once a fit runs past the delay."""
    import io
    import time

    from emjax.cli import _progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(_progress, "DELAY_S", 0.0)
    monkeypatch.setattr(_progress, "EVERY_S", 0.01)
    args = type("Args", (), {"quiet": False, "progress": False})()
    progress = FitProgress("emjax fit", _progress.mode_of(args), max_iter=10)
    assert progress.mode == "elapsed" and progress.fit_options == {}
    with progress:
        time.sleep(0.1)
    text = terminal.getvalue()
    assert text.startswith("\remjax fit: running, ") and text.count("\r") >= 2
    assert re.search(r"\remjax fit: done, \d+\.\d s\s*\n$", text), text
    args.quiet = True
    assert _progress.mode_of(args) == "off"


def test_predict_with_a_kmeans_model_file(tmp_path, capsys):
    """Any saved model with ``predict`` works; the columns are those the model has."""
    emjax.save(tmp_path / "km.emjax", emjax.KMeans(2), emjax.KMeansParams(np.array([[0.0, 0.0], [5.0, 5.0]])))
    (tmp_path / "d.csv").write_text("a,b\n0.5,0.1\n4,6\n")
    assert main(["predict", str(tmp_path / "km.emjax"), str(tmp_path / "d.csv")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("label,") and [line.split(",")[0] for line in lines[1:]] == ["0", "1"]
