"""The posterior for researchers: ArviZ InferenceData with named mechanism parameters."""

import numpy as np


def test_inference_data_has_named_parameters_on_their_natural_scale(advi_model):
    idata = advi_model.to_inference_data()
    post = idata.posterior
    lay = advi_model.layout_
    assert {"mean", "carry", "lever_effect", "noise_sd", "fault_rate", "fault_sd"} <= set(post.data_vars)
    assert post["mean"].dims == ("chain", "draw", "gauged_pair")
    assert post["lever_effect"].dims == ("chain", "draw", "lever_edge", "power")
    assert list(post["power"].values) == ["lin", "quad"]
    assert post.sizes["gauged_pair"] == len(lay.mean_i)
    assert post.sizes["lever_edge"] * 2 == len(lay.lever_i)
    # the coords are the layout's labels, the values its decoded draws
    theta = advi_model.theta_draws()
    first = lay.names[lay.noise_i[0]]
    assert str(post["noise_pair"].values[0]) == first[first.index("[") + 1:-1]
    np.testing.assert_allclose(post["noise_sd"].stack(s=("chain", "draw")).values[0],
                               np.exp(theta[:, lay.noise_i[0]]))
    rate = post["fault_rate"].values
    assert (rate > 0).all() and (rate < 1).all()
    lin = post["lever_effect"].sel(power="lin").stack(s=("chain", "draw")).values
    np.testing.assert_allclose(lin[0], theta[:, lay.lever_i[0]])
    # the saved posterior is untouched: still the flat theta
    assert "theta" in advi_model.idata_.posterior and "carry" not in advi_model.idata_.posterior


def test_arviz_summaries_and_plots_work_on_it(advi_model):
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idata = advi_model.to_inference_data()
    table = az.summary(idata, var_names=["noise_sd", "fault_rate"], kind="stats")
    n = idata.posterior.sizes["noise_pair"] + idata.posterior.sizes["fault_segment"]
    assert len(table) == n
    assert any("noise_sd[" in i for i in table.index)
    assert (table["sd"] > 0).all()
    axes = az.plot_forest(idata, var_names=["carry"], combined=True)
    assert len(axes[0].get_yticklabels()) >= idata.posterior.sizes["carry_edge"]
    axes = az.plot_trace(idata, var_names=["fault_rate"])
    assert axes.shape[0] == 1
    plt.close("all")
