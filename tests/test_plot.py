"""emjax.plot: the figures are drawn with the fit's numbers (ellipses from the covariances'
eigen-decompositions, traces from FitResult.trace, selection lines from the table, images
from the means), one is rendered to PNG and its pixels looked at, and matplotlib stays an
optional extra (``import emjax`` does not import it)."""

import io
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import emjax  # noqa: E402
import emjax.plot as ep  # noqa: E402
from emjax._select import CVRow, SelectionRow  # noqa: E402

RNG = np.random.default_rng(0)
X2 = np.concatenate([RNG.normal(size=(40, 2)) @ [[1.0, 0.6], [0.0, 0.5]], RNG.normal(size=(40, 2)) * 0.7 + [4.0, 3.0]])


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def fitted():
    """A 2-component full-covariance fit of 80 points, 3 restarts, by batch EM."""
    model = emjax.Mixture(emjax.Gaussian("full"), 2)
    return model, emjax.fit(model, X2, key=jax.random.key(0), n_restarts=3, init="random", max_iter=50)


def _cov_params(covariance_type, k=3, d=2, seed=1):
    """Hand-made Gaussian parameters of every structure (no fit): means (K, D) and the structure's covariances."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(k, d, d))
    full = a @ np.swapaxes(a, 1, 2) + 0.3 * np.eye(d)
    covs = {"full": full, "VEV": full, "tied": full[0], "diag": rng.uniform(0.2, 2.0, (k, d)),
            "spherical": rng.uniform(0.2, 2.0, k)}[covariance_type]
    means = rng.normal(scale=3.0, size=(k, d))
    return emjax.MixtureParams(jnp.full(k, 1.0 / k), emjax.GaussianParams(jnp.asarray(means), jnp.asarray(covs)))


def _as_matrices(covariance_type, covs, k, d):
    covs = np.asarray(covs)
    if covariance_type == "tied":
        return np.broadcast_to(covs, (k, d, d))
    if covariance_type == "diag":
        return covs[:, :, None] * np.eye(d)
    if covariance_type == "spherical":
        return covs[:, None, None] * np.eye(d)
    return covs


def _check_ellipse(patch, mean, cov2, n_std):
    vals, vecs = np.linalg.eigh(cov2)
    np.testing.assert_allclose(patch.center, mean, rtol=1e-12)
    np.testing.assert_allclose([patch.width, patch.height], 2 * n_std * np.sqrt(vals[::-1]), rtol=1e-10)
    if not np.isclose(vals[0], vals[1], rtol=1e-9):  # the major axis is along the top eigenvector
        direction = np.array([np.cos(np.radians(patch.angle)), np.sin(np.radians(patch.angle))])
        assert abs(direction @ vecs[:, 1]) == pytest.approx(1.0, abs=1e-10)


# -- ellipses and pairs --------------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical", "VEV"])
def test_ellipses_axes_are_the_covariance_eigenvalues(covariance_type):
    k, d = 3, 2
    params = _cov_params(covariance_type, k, d)
    model = emjax.Mixture(emjax.Gaussian(covariance_type), k)
    ax = ep.ellipses(model, params, n_std=(1.0, 2.5))
    assert len(ax.patches) == 2 * k
    covs = _as_matrices(covariance_type, params.components.covariances, k, d)
    for c in range(k):
        for j, n_std in enumerate((1.0, 2.5)):
            _check_ellipse(ax.patches[2 * c + j], np.asarray(params.components.means[c]), covs[c], n_std)


def test_ellipses_of_student_t_are_its_scale_matrices_and_projections_its_blocks():
    k, d = 2, 3
    rng = np.random.default_rng(3)
    a = rng.normal(size=(k, d, d))
    scale = a @ np.swapaxes(a, 1, 2) + 0.5 * np.eye(d)
    params = emjax.MixtureParams(jnp.array([0.4, 0.6]), emjax.StudentTParams(
        jnp.asarray(rng.normal(size=(k, d))), jnp.asarray(scale), jnp.array([3.0, 10.0])))
    model = emjax.Mixture(emjax.StudentT("full"), k)
    with pytest.raises(ValueError, match="pairs"):
        ep.ellipses(model, params)  # D = 3 without dims
    ax = ep.ellipses(model, params, dims=(2, 0))
    assert len(ax.patches) == k
    for c in range(k):
        block = scale[c][np.ix_([2, 0], [2, 0])]
        _check_ellipse(ax.patches[c], np.asarray(params.components.means[c])[[2, 0]], block, 2.0)


def test_ellipses_of_variational_bayes_are_its_expected_covariances():
    k, d = 2, 2
    params = _cov_params("diag", k, d, seed=5).components
    vb = emjax.VariationalGaussianMixture(k, "diag", weight_concentration_prior_type="dirichlet_distribution")
    vparams = emjax.VariationalGaussianParams(jnp.array([3.0, 5.0]), jnp.ones(k), params.means, jnp.full(k, 4.0),
                                              params.covariances)
    ax = ep.ellipses(vb, vparams, n_std=1.0)
    assert [p.get_label() for p in ax.patches] == ["component 0 (weight 0.375)", "component 1 (weight 0.625)"]
    covs = _as_matrices("diag", params.covariances, k, d)
    for c in range(k):
        _check_ellipse(ax.patches[c], np.asarray(params.means[c]), covs[c], 1.0)


def test_ellipses_colour_points_by_component_and_skip_dropped_ones(fitted):
    model, result = fitted
    ax = ep.ellipses(model, result.params, X2, n_std=1.0, names=("a", "b"))
    assert len(ax.patches) == 2 and ax.get_xlabel() == "a"
    labels = np.asarray(model.predict(result.params, X2))
    colours = ax.collections[0].get_facecolors()
    assert len(colours) == len(X2)
    np.testing.assert_allclose(colours[:, :3], ep._plots._colours(2)[labels][:, :3])
    dropped = emjax.MixtureParams(jnp.array([1.0, 0.0]), result.params.components)
    assert len(ep.ellipses(model, dropped).patches) == 1


def test_ellipses_refuse_what_they_cannot_draw(fitted):
    model, result = fitted
    bernoulli = emjax.Mixture(emjax.Bernoulli(), 2)
    with pytest.raises(TypeError, match="no covariances"):
        ep.ellipses(bernoulli, emjax.MixtureParams(jnp.array([0.5, 0.5]), emjax.BernoulliParams(jnp.full((2, 2), 0.5))))
    with pytest.raises(TypeError, match="result.params"):
        ep.ellipses(model, result)
    with pytest.raises(ValueError, match="3 features"):
        ep.ellipses(model, result.params, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="n_std"):
        ep.ellipses(model, result.params, n_std=-1.0)
    with pytest.raises(ValueError, match="dims"):
        ep.ellipses(model, result.params, dims=(0, 0))


def test_pairs_draws_every_projection():
    k, d = 2, 3
    params = _cov_params("full", k, d, seed=4)
    model = emjax.Mixture(emjax.Gaussian("full"), k)
    x = np.asarray(params.components.means)[RNG.integers(0, k, 30)] + RNG.normal(size=(30, d))
    fig = ep.pairs(model, params, x, names=["a", "b", "c"])
    axes = np.asarray(fig.axes).reshape(d, d)
    covs = np.asarray(params.components.covariances)
    for r in range(d):
        for c in range(d):
            if r == c:
                assert len(axes[r, c].containers) == k  # a stacked histogram
                continue
            assert len(axes[r, c].patches) == k
            _check_ellipse(axes[r, c].patches[1], np.asarray(params.components.means[1])[[c, r]],
                           covs[1][np.ix_([c, r], [c, r])], 2.0)
    assert axes[2, 0].get_xlabel() == "a" and axes[1, 0].get_ylabel() == "b"
    with pytest.raises(ValueError, match="at least two"):
        ep.pairs(model, params, x, dims=[1])


# -- trace -------------------------------------------------------------------------------------


def test_trace_lines_are_the_fits_traces(fitted):
    _, result = fitted
    ax = ep.trace(result, restarts="all")
    trace, n_iter, n = np.asarray(result.trace), np.asarray(result.n_iter), float(result.n_points)
    assert len(ax.lines) == 3
    for r, line in enumerate(ax.lines):
        np.testing.assert_array_equal(line.get_xdata(), np.arange(n_iter[r] + 1))
        np.testing.assert_allclose(line.get_ydata(), trace[r, : n_iter[r] + 1] / n, rtol=1e-15)
    best = ep.trace(result, per_point=False).lines[0]
    np.testing.assert_array_equal(best.get_ydata(), trace[int(result.best), : n_iter[int(result.best)] + 1])
    # batch EM: one pass to start, one per step, so the passes axis is 1 + t and ends at n_passes
    passes = ep.trace(result, x="passes", restarts=[0]).lines[0].get_xdata()
    np.testing.assert_allclose(passes, 1.0 + np.arange(n_iter[0] + 1))
    assert passes[-1] == float(result.n_passes[0])
    # seconds: the wall time spread evenly over the loop's max(n_iter) steps
    secs = ep.trace(result, x="seconds", seconds=2.0, restarts="all")
    for r, line in enumerate(secs.lines):
        np.testing.assert_allclose(line.get_xdata(), np.arange(n_iter[r] + 1) * 2.0 / n_iter.max())


def test_trace_compares_algorithms_on_one_axis(fitted):
    model, em = fitted
    batch = 20  # a stepwise step is one epoch of N // batch updates: 4 batches of 20 rows, one pass
    stepwise = emjax.fit(model, X2, key=jax.random.key(1), init=em.params, max_iter=6, tol=0.0,
                         algorithm=emjax.StepwiseEM(batch_size=batch, updates_per_step=2))
    fits = {"EM": em, "stepwise": stepwise}
    ax = ep.trace(fits, x="passes", reference="best")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["EM", "stepwise"]
    assert ax.get_yscale() == "log"
    em_line, sw_line = ax.lines
    xs = sw_line.get_xdata()  # each step read 2 mini-batches of 20 of 80 rows: half a pass
    np.testing.assert_allclose(np.diff(xs), 0.5)
    assert xs[-1] == pytest.approx(float(stepwise.n_passes[0]))
    finals = [float(em.objective[em.best]), float(stepwise.objective[0])]
    reference = max(finals) / float(em.n_points)
    np.testing.assert_allclose(sw_line.get_ydata(), reference - np.asarray(stepwise.trace[0, :7]) / float(em.n_points))
    secs = ep.trace(fits, x="seconds", seconds={"EM": 0.5, "stepwise": 0.3})
    assert secs.lines[1].get_xdata()[-1] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="seconds"):
        ep.trace(fits, x="seconds", seconds=1.0)
    with pytest.raises(ValueError, match="'iteration'"):
        ep.trace(em, x="epochs")
    with pytest.raises(TypeError, match="FitResult"):
        ep.trace([em])


# -- selection -------------------------------------------------------------------------------


def _selection(heldout=False):
    rows = []
    for s, structure in enumerate(("Gaussian(full)", "Gaussian(tied)")):
        for k in (1, 2, 3):
            ll = -100.0 + 20 * k - 3 * s - (k == 3) * 15
            p = 5 * k + s
            rows.append(SelectionRow(k, structure, ll, p, -2 * ll + p * np.log(80), -2 * ll + 2 * p,
                                     -2 * ll + p * np.log(80) + k, emjax.RESULTS.SUCCESS,
                                     -50.0 + k if heldout else None))
    best = min(rows, key=lambda r: r.bic)
    return emjax.Selection(rows, "bic", best, None, None, {}, {})


def test_selection_lines_are_the_tables_criteria():
    sel = _selection()
    ax = ep.selection(sel, criteria=("bic", "icl"))
    lines = ax.lines[:4]
    for line, (criterion, structure) in zip(lines, [(c, s) for c in ("bic", "icl")
                                                    for s in ("Gaussian(full)", "Gaussian(tied)")]):
        rows = [r for r in sel.table if r.structure == structure]
        np.testing.assert_array_equal(line.get_xdata(), [r.k for r in rows])
        np.testing.assert_array_equal(line.get_ydata(), [getattr(r, criterion) for r in rows])
    star = ax.lines[4]
    assert (star.get_xdata()[0], star.get_ydata()[0]) == (sel.best.k, sel.best.bic)
    mclust = ep.selection(sel, mclust_sign=True)
    np.testing.assert_array_equal(mclust.lines[0].get_ydata(), -np.asarray([r.bic for r in sel.table[:3]]))
    assert "higher is better" in mclust.get_ylabel()
    with pytest.raises(ValueError, match="held-out"):
        ep.selection(sel, criteria="heldout")
    with pytest.raises(ValueError, match="criteria"):
        ep.selection(sel, criteria=("bbic",))
    heldout = ep.selection(_selection(True), criteria="heldout")
    np.testing.assert_array_equal(heldout.lines[0].get_ydata(), [-49, -48, -47])


def test_selection_of_a_cross_validation_has_error_bars():
    table = [CVRow(k, "Gaussian(full)", -300.0 + 10 * k, -3.0 + 0.1 * k, 0.05 * k, (-1.0,) * 3, (0,) * 3)
             for k in (1, 2, 3)]
    cv = emjax.CrossValidation(table, table[2], np.zeros(10, int), {}, {})
    ax = ep.selection(cv)
    np.testing.assert_allclose(np.asarray(ax.lines[0].get_ydata(), float), [r.per_point for r in table])
    bars = ax.containers[0]
    assert bars.has_yerr
    with pytest.raises(TypeError, match="Selection"):
        ep.selection(table)


# -- responsibilities ------------------------------------------------------------------------


def test_responsibilities_show_posterior_and_uncertainty(fitted):
    model, result = fitted
    post = np.asarray(model.posterior(result.params, X2))
    uncertainty = 1.0 - post.max(axis=1)
    ax = ep.responsibilities(model, result.params, X2, size=5.0)
    np.testing.assert_allclose(ax.collections[0].get_sizes(), 5.0 + 200.0 * uncertainty)
    bars = ep.responsibilities(model, result.params, X2, kind="bars")
    assert len(bars.collections) == 2  # one band per component
    order = np.lexsort((uncertainty, post.argmax(axis=1)))
    np.testing.assert_allclose(bars.lines[-1].get_ydata(), uncertainty[order])
    with pytest.raises(ValueError, match="kind"):
        ep.responsibilities(model, result.params, X2, kind="pie")


def test_responsibilities_of_discrete_data_are_bars():
    model = emjax.Mixture(emjax.Bernoulli(), 2)
    means = jnp.array([[0.9, 0.9, 0.1], [0.1, 0.2, 0.8]])
    params = emjax.MixtureParams(jnp.array([0.5, 0.5]), emjax.BernoulliParams(means))
    x = (RNG.random((30, 3)) < 0.5).astype(float)
    ax = ep.responsibilities(model, params, x)  # D = 3: bars by default
    post = np.asarray(model.posterior(params, x))
    np.testing.assert_allclose(np.sort(ax.lines[-1].get_ydata()), np.sort(1.0 - post.max(axis=1)))
    assert ax.get_ylim() == (0.0, 1.0)
    with pytest.raises(ValueError, match="dims"):
        ep.responsibilities(model, params, x, kind="scatter")


# -- images ----------------------------------------------------------------------------------


def test_images_of_bernoulli_means_and_categorical_probabilities():
    means = RNG.uniform(size=(3, 12))
    weights = jnp.array([0.2, 0.5, 0.3])
    model = emjax.Mixture(emjax.Bernoulli(), 3)
    fig = ep.images(model, emjax.MixtureParams(weights, emjax.BernoulliParams(jnp.asarray(means))), (3, 4))
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 3
    for ax, k in zip(drawn, (1, 2, 0)):  # heaviest first
        np.testing.assert_allclose(ax.images[0].get_array(), means[k].reshape(3, 4))
        assert ax.images[0].get_clim() == (0.0, 1.0)
    probs = RNG.dirichlet(np.ones(4), size=(3, 6))  # (K, D, S)
    cat = emjax.Mixture(emjax.Categorical(4), 3)
    cparams = emjax.MixtureParams(weights, emjax.CategoricalParams(jnp.asarray(probs)))
    fig = ep.images(cat, cparams, (2, 3), order="index")
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 3 * 4
    np.testing.assert_allclose(drawn[2 * 4 + 3].images[0].get_array(), probs[2, :, 3].reshape(2, 3))
    one = [ax for ax in ep.images(cat, cparams, 6, category=1).axes if ax.images]
    assert len(one) == 3 and one[0].images[0].get_array().shape == (1, 6)
    with pytest.raises(ValueError, match="product"):
        ep.images(model, emjax.MixtureParams(weights, emjax.BernoulliParams(jnp.asarray(means))), (5, 5))
    with pytest.raises(TypeError, match="Mixture"):
        ep.images(emjax.KMeans(2), None, (2, 2))


# -- restarts --------------------------------------------------------------------------------


def _restart_result():
    r = 5
    status = np.array([emjax.RESULTS.SUCCESS, emjax.RESULTS.COLLAPSED, emjax.RESULTS.NONFINITE,
                       emjax.RESULTS.SUCCESS, emjax.RESULTS.INIT_FAILED])
    objective = np.array([-110.0, -90.0, -150.0, -100.0, -np.inf])
    zeros = np.zeros(r, np.int32)
    return emjax.FitResult(
        params=None, restart_params=None, objective=objective, trace=objective[:, None], n_iter=zeros,
        n_passes=zeros.astype(float), converged=status == 0, status=status, collapsed=None,
        n_collapses=np.array([1, 2, 0, 0, 0]), best=np.asarray(3), n_points=np.asarray(10.0),
    )


def test_restarts_show_status_and_singular_ones():
    result = _restart_result()
    ax = ep.restarts(result)
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_allclose(offsets, [[0, -11.0], [1, -9.0], [2, -15.0], [3, -10.0]])
    colours = ax.collections[0].get_facecolors()[:, :3]
    np.testing.assert_allclose(colours[1], matplotlib.colors.to_rgb("tab:purple"))  # collapsed
    np.testing.assert_allclose(colours[2], matplotlib.colors.to_rgb("tab:red"))  # non-finite
    crosses = ax.collections[1].get_offsets()  # restarts 0 (re-initialised), 1 and 2 met a singularity
    np.testing.assert_allclose(crosses[:, 0], [0, 1, 2])
    np.testing.assert_allclose(ax.collections[2].get_offsets(), [[3, -10.0]])  # the best, ringed
    assert ax.lines[0].get_marker() == "v"  # the failed initialisation, at the bottom
    assert "3/5 singular" in ax.get_xlabel()
    two = ep.restarts({"EM": result, "Adam": result})
    assert [t.get_text() for t in two.get_xticklabels()] == ["EM\n3/5 singular", "Adam\n3/5 singular"]


# -- a rendered figure, and matplotlib as an optional extra --------------------------------------------


def test_rendered_figure_has_coloured_ellipses_and_points(fitted):
    model, result = fitted
    fig, ax = plt.subplots(figsize=(4, 3), dpi=60)
    ep.ellipses(model, result.params, X2, n_std=(1, 2), ax=ax)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    pixels = plt.imread(io.BytesIO(buffer.getvalue()))[..., :3]
    assert pixels.shape == (180, 240, 3)
    saturated = pixels.max(axis=2) - pixels.min(axis=2) > 0.3  # coloured (not grey) pixels: points and ellipses
    assert saturated.mean() > 0.01
    for colour in ep._plots._colours(2)[:, :3]:  # both components' colours appear
        assert np.any(np.all(np.abs(pixels - colour) < 0.08, axis=2))
    assert (pixels.min(axis=2) < 0.2).sum() > 100  # black text, frame and centre marks


def test_import_emjax_does_not_import_matplotlib():
    code = "import sys, emjax; assert 'matplotlib' not in sys.modules, 'emjax imported matplotlib'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_missing_matplotlib_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "emjax.plot" or m.startswith("emjax.plot.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    import importlib

    with pytest.raises(ImportError, match=r'pip install "emjax\[plot\]"'):
        importlib.import_module("emjax.plot")
