"""What the built-in analyses' plots show (issue 25, items 9 and 10).

The plots are drawn from small synthetic datasets by the analyses' own draw
functions and read back as matplotlib Figures: what each line plots, its
colour and style, the legends and labels. Seconds, not a build.
"""

from __future__ import annotations

import math
from itertools import combinations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from raffinerie.analysis.builtin.pedestal import Pedestal  # noqa: E402
from raffinerie.analysis.builtin.pedestal_trim import PedestalTrim  # noqa: E402
from raffinerie.analysis.builtin.scurve import SCurve  # noqa: E402
from raffinerie.analysis.builtin.timewalk import Timewalk  # noqa: E402

CALIBS = (128, 256, 512, 1024, 2048)
WALK = {128: 60.0, 256: 22.0, 512: 6.0, 1024: 2.0, 2048: 0.0}   # later arrival for small charges


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def figures(distillery, data):
    _, draw, _ = distillery.analyse(data)
    return {name: f() for name, f in draw.items()}


def timewalk_data(saturated=True, chips=(0, 1), base=900.0):
    """Injected channel 10 of each chip, phase 0-15 x CALIBS, TOA wrapping modulo 1024."""
    rows = []
    for chip in chips:
        for phase in range(16):
            for calib in CALIBS:
                arrival = base + 20 * chip + 64.3 * phase + WALK[calib]
                tail = max(1023 - 90 * max(phase - 5, 0), 300)
                adc = tail if saturated else 300 + (tail - 300) * calib / 2048
                rows.append(dict(chip=chip, half=0, channel=10, channeltype=0, HighRange=1, LowRange=0,
                                 IntCtest=1, Calib=calib, phase_strobe=phase, point=phase * 5 + CALIBS.index(calib),
                                 toa_efficiency=1.0, tot_efficiency=1.0, toa_mean=arrival % 1024,
                                 adc_mean=adc, adc_median=adc))
    return pd.DataFrame(rows)


def lines_of(ax):
    """(label, Line2D) of the data lines of a panel, in legend order."""
    return [(l.get_label(), l) for l in ax.get_lines() if not l.get_label().startswith(("_", "raw TOA"))]


def min_colour_distance(lines) -> float:
    rgb = [np.array(matplotlib.colors.to_rgb(l.get_color())) for _, l in lines]
    return min(np.linalg.norm(a - b) for a, b in combinations(rgb, 2))


# --- item 9: timewalk TOA ---------------------------------------------------------


def test_toa_versus_phase_is_unwrapped_by_one_rule_and_says_so():
    data = timewalk_data()
    fig = figures(Timewalk(), data)["toa_vs_phase"]
    ax = fig.axes[0]
    assert "unwrapped" in ax.get_ylabel() and "1024" in ax.get_ylabel()
    raw = data[data.chip == 0].set_index(["Calib", "phase_strobe"]).toa_mean
    for label, line in lines_of(ax):
        calib = int(label.split()[-1])
        x, y = line.get_xdata().astype(int), line.get_ydata()
        # the raw value plus whole wraps, and no jump back by 1024: each line climbs ~64 per step
        assert np.allclose((y - raw.loc[calib].loc[x].to_numpy()) % 1024, 0)
        assert np.allclose(np.diff(y), 64.3, atol=1), label
    # the wrap is drawn, and named in the legend
    legend = [t.get_text() for a in fig.axes if a.get_legend() for t in a.get_legend().get_texts()]
    assert any("wraps" in t for t in legend), legend


def test_toa_versus_charge_stacks_every_phase_in_legend_order_with_colours_told_apart():
    fig = figures(Timewalk(), timewalk_data())["toa_vs_charge"]
    for ax in fig.axes:
        lines = lines_of(ax)
        assert len(lines) == 12   # MAX_LINES of the 16 phases
        phases = [int(label.split()[-1]) for label, _ in lines]
        assert phases == sorted(phases)
        # one rule for all phases: a later phase sits higher, whatever side of the wrap it lies
        levels = [np.mean(line.get_ydata()) for _, line in lines]
        assert np.all(np.diff(levels) > 30), levels
        assert min_colour_distance(lines) > 0.15


def test_toa_unwrap_starts_from_the_raw_range_even_when_the_earliest_pulse_sits_at_the_wrap():
    fig = figures(Timewalk(), timewalk_data(chips=(0,), base=1010.0))["toa_vs_phase"]
    lines = lines_of(fig.axes[0])
    starts = [line.get_ydata()[0] for _, line in lines]
    # the largest charge arrives first at raw 1010; the smaller ones, later, past the wrap
    assert 0 <= min(starts) < 1024 and all(s >= min(starts) for s in starts)
    assert np.allclose(np.diff(lines[0][1].get_ydata()), 64.3, atol=1)


# --- item 10: ADC versus phase ---------------------------------------------------------


def test_adc_lines_that_coincide_are_each_visible_and_the_title_says_why():
    fig = figures(Timewalk(), timewalk_data(saturated=True))["adc_vs_phase"]
    title = fig.get_suptitle()
    assert "coincide" in title and "saturat" in title
    lines = lines_of(fig.axes[0])
    assert len(lines) == len(CALIBS)
    styles = [(l.get_marker(), l.get_linestyle(), l.get_markersize()) for _, l in lines]
    for a, b in combinations(styles, 2):
        assert a[0] != b[0] and a[2] != b[2]   # distinct marker shapes and sizes: rings round each other
    assert min_colour_distance(lines) > 0.15


def test_adc_lines_that_coincide_among_others_are_picked_out():
    # a pedestal line (no injection) beside five saturated ones, as on the real runs
    data = timewalk_data(saturated=True)
    quiet = data[data.Calib == 128].assign(Calib=0, toa_efficiency=0.0, tot_efficiency=0.0, adc_mean=300.0,
                                           adc_median=300.0, point=lambda d: d.point + 1000)
    fig = figures(Timewalk(), pd.concat([data, quiet], ignore_index=True))["adc_vs_phase"]
    title = fig.get_suptitle()
    assert "coincide" in title and "Calib 128, 256, 512, 1024, 2048" in title and "Calib 0," not in title
    lines = dict(lines_of(fig.axes[0]))
    assert lines["Calib 0"].get_markerfacecolor() != "none"    # drawn as usual
    rings = [lines[f"Calib {c}"] for c in CALIBS]
    assert all(l.get_markerfacecolor() == "none" for l in rings)
    assert len({l.get_markersize() for l in rings}) == len(CALIBS)


def test_adc_lines_that_differ_make_no_claim():
    fig = figures(Timewalk(), timewalk_data(saturated=False))["adc_vs_phase"]
    assert "coincide" not in fig.get_suptitle()


# --- item 10: S-curves and thresholds -------------------------------------------------


def scurve_data(calib_channel=False):
    rows = []
    chans = [(0, 10, 13.0, 0.01), (0, 20, 10.5, 0.6), (0, 40, 7.0, 0.01), (0, 50, 4.3, 0.5)]
    if calib_channel:
        chans.append((1, 0, 8.0, 0.6))
    for chip in (0, 1):
        for kind, channel, threshold, width in chans:
            for calib in range(20):
                eff = 0.5 * (1 + math.erf((calib - threshold) / (math.sqrt(2) * width)))
                rows.append(dict(chip=chip, half=0, channel=channel, channeltype=kind, HighRange=1, LowRange=0,
                                 IntCtest=1, Calib=calib, point=calib, toa_efficiency=eff, tot_efficiency=0.0,
                                 adc_median=400.0, adc_mean=400.0))
    return pd.DataFrame(rows)


def test_scurve_legends_sit_outside_the_panels():
    fig = figures(SCurve({"scan": "Calib"}), scurve_data())["scurves"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert len(legends) == 2
    for ax in fig.axes:
        legend = ax.get_legend()
        box, panel = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert not box.overlaps(panel), "the legend covers part of the panel"
        # ... and covers neither the x label
        assert not box.overlaps(ax.xaxis.label.get_window_extent(renderer))
    # the unresolved channel's bracket is drawn and named
    assert any("between" in t.get_text() for t in legends[0].get_texts())


def test_thresholds_name_calibration_channels_only_when_there_are_some():
    fig = figures(SCurve({"scan": "Calib"}), scurve_data())["thresholds"]
    assert all("calibration" not in ax.get_xlabel() for ax in fig.axes)
    fig = figures(SCurve({"scan": "Calib"}), scurve_data(calib_channel=True))["thresholds"]
    ax = fig.axes[0]
    assert "calibration" in ax.get_xlabel()
    shown = [l for l in ax.get_lines() if "calibration" in l.get_label()]
    assert shown and 100 in shown[0].get_xdata()


# --- item 10: noise ---------------------------------------------------------------


def test_noise_threshold_line_is_in_the_legend():
    rows = [dict(chip=chip, half=channel // 36, channel=channel, channeltype=0, HighRange=0, LowRange=0,
                 IntCtest=0, Calib=0, point=0, adc_mean=290.0 + channel % 7, adc_stdd=1.0 + 0.01 * channel,
                 adc_median=290.0, toa_efficiency=0.0, tot_efficiency=0.0)
            for chip in (0, 1) for channel in range(72)]
    fig = figures(Pedestal({"noisy_threshold": 2.5}), pd.DataFrame(rows))["noise"]
    for ax in fig.axes:
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any("2.5" in t and "noisy" in t for t in texts), texts
        lines = [l for l in ax.get_lines() if "noisy above" in l.get_label()]
        assert lines and np.allclose(lines[0].get_ydata(), 2.5)


# --- item 10: trim scan -----------------------------------------------------------


def test_trim_scan_draws_the_measured_points_and_readable_fits():
    trims = (0, 16, 32, 48, 63)
    rows = [dict(chip=chip, half=channel // 36, channel=channel, channeltype=0, trim_inv=trim,
                 adc_mean=250.0 + channel - 1.5 * trim + (0.7 if trim == 32 else 0.0))
            for chip in (0, 1) for channel in range(72) for trim in trims]
    fig = figures(PedestalTrim(), pd.DataFrame(rows))["trim_scan"]
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 2
    for ax in panels:
        points = [c for c in ax.collections if len(c.get_offsets()) and not hasattr(c, "get_segments")]
        assert sum(len(c.get_offsets()) for c in points) == 72 * len(trims)   # every measured point
        fits = [c for c in ax.collections if hasattr(c, "get_segments") and len(c.get_segments())]
        assert sum(len(c.get_segments()) for c in fits) == 72
        # coloured by channel, which a colour bar reads out
        assert fits[0].get_array() is not None and np.ptp(fits[0].get_array()) > 0
    assert any(ax.get_ylabel() == "channel" for ax in fig.axes if ax not in panels)
    texts = [t.get_text() for t in panels[0].get_legend().get_texts()]
    assert "measured" in texts and "straight-line fit" in texts
