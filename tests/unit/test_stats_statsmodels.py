"""The report's ANOVA and Holm adjustment against statsmodels (a test-only dependency) on random tables."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats as sps
import statsmodels.formula.api as smf
from statsmodels.stats.anova import anova_lm
from statsmodels.stats.multitest import multipletests

from locbench.report import stats


def _table(
    rng: np.random.Generator, levels: list[int], seeds: int, *, drop_runs: float = 0.0, drop_cells: int = 0
) -> pd.DataFrame:
    """One row per run: a level of each factor, a seed and a value with main, interaction and seed effects."""
    cells = list(itertools.product(*[range(k) for k in levels]))
    gone = {cells[i] for i in rng.choice(len(cells), drop_cells, replace=False)}
    shift = rng.normal(0, 0.5, size=seeds)
    effect = {c: rng.normal(0, 0.6) for c in cells}  # interactions of every order, not only main effects
    rows = []
    for c in cells:
        if c in gone:
            continue
        for s in range(seeds):
            if rng.random() < drop_runs:
                continue
            y = 0.3 * c[0] + effect[c] + shift[s] + rng.normal(0, 0.5)
            rows.append({**{f"f{i}": f"l{v}" for i, v in enumerate(c)}, "seed": f"s{s}", "y": y})
    return pd.DataFrame(rows)


def _ours(df: pd.DataFrame, names: list[str], *, block: bool) -> dict[str, stats.AnovaTest]:
    tests = stats.factorial_anova(
        df["y"].to_numpy(), {f: df[f].tolist() for f in names}, block=df["seed"].tolist() if block else None
    )
    return {":".join(f"C({f})" for f in t.term.split(" x ")): t for t in tests}


def _check(ours: stats.AnovaTest, f: float, df1: float, df2: float, p: float) -> None:
    assert ours.df1 == df1 and ours.df2 == df2
    assert ours.f == pytest.approx(f, rel=1e-7, abs=1e-9)
    assert ours.p == pytest.approx(p, rel=1e-6, abs=1e-12)


CASES = [
    # (levels per factor, seeds, share of runs dropped)
    ([2, 2], 3, 0.0),
    ([3, 2], 3, 0.0),
    ([2, 2], 4, 0.2),
    ([3, 2], 3, 0.15),
    ([2, 2, 2], 3, 0.0),
    ([3, 2, 2], 3, 0.0),
    ([2, 2, 2], 3, 0.15),
    ([3, 2, 2], 4, 0.2),
]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("levels", "seeds", "drop"), CASES)
def test_type2_anova_equals_statsmodels_with_seed_block(seed: int, levels: list[int], seeds: int, drop: float):
    rng = np.random.default_rng(seed)
    df = _table(rng, levels, seeds, drop_runs=drop)
    names = [f"f{i}" for i in range(len(levels))]
    ref = anova_lm(smf.ols("y ~ C(seed) + " + "*".join(f"C({f})" for f in names), df).fit(), typ=2)
    ours = _ours(df, names, block=True)
    # every term of the full factorial is tested, in statsmodels' order (main effects, then two-way, ...)
    assert list(ours) == [k for k in ref.index if k not in ("C(seed)", "Residual")]
    for term, t in ours.items():
        _check(t, ref.loc[term, "F"], ref.loc[term, "df"], ref.loc["Residual", "df"], ref.loc[term, "PR(>F)"])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("levels", [[2, 2], [3, 2], [2, 2, 2], [3, 2, 2]])
def test_single_seed_anova_uses_the_highest_interaction_as_error_like_statsmodels(seed: int, levels: list[int]):
    df = _table(np.random.default_rng(seed), levels, 1)
    names = [f"f{i}" for i in range(len(levels))]
    order = len(names) - 1
    ref = anova_lm(smf.ols(f"y ~ ({' + '.join(f'C({f})' for f in names)})**{order}", df).fit(), typ=2)
    ours = _ours(df, names, block=False)
    assert list(ours) == [k for k in ref.index if k != "Residual"]
    for term, t in ours.items():
        _check(t, ref.loc[term, "F"], ref.loc[term, "df"], ref.loc["Residual", "df"], ref.loc[term, "PR(>F)"])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("levels", "cells"), [([2, 2], 1), ([3, 2], 1), ([2, 2, 2], 1), ([3, 2, 2], 2)])
def test_type2_anova_with_empty_grid_points_equals_statsmodels_nested_fits(seed: int, levels: list[int], cells: int):
    """A grid point with no finished run leaves the full model rank-deficient.

    ``anova_lm(typ=2)`` computes Type II as Wald tests on the full model's coefficients, which are then not all
    estimable (it reports, say, an interaction with one degree of freedom in a 2 x 2 grid with an empty point,
    where no interaction can be estimated). The definition it implements, the nested comparison, stays well
    defined: each term against every term that does not contain it, degrees of freedom from ranks. Compared
    here with statsmodels' own OLS fits of those nested models.
    """
    rng = np.random.default_rng(seed)
    df = _table(rng, levels, 3, drop_runs=0.1, drop_cells=cells)
    names = [f"f{i}" for i in range(len(levels))]
    all_terms = [t for k in range(1, len(names) + 1) for t in itertools.combinations(names, k)]

    def formula(terms) -> str:
        return "y ~ C(seed)" + "".join(" + " + ":".join(f"C({f})" for f in t) for t in terms)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank-deficient designs warn in statsmodels
        full = smf.ols(formula(all_terms), df).fit()
        ours = _ours(df, names, block=True)
        for term in all_terms:
            t = ours[":".join(f"C({f})" for f in term)]
            others = [u for u in all_terms if not set(term) < set(u)]
            with_term = smf.ols(formula(others), df).fit()
            without = smf.ols(formula([u for u in others if u != term]), df).fit()
            df1 = round(without.df_resid - with_term.df_resid)
            assert t.df2 == round(full.df_resid)
            if df1 == 0:
                assert t.df1 == 0 and math.isnan(t.p) and "confounded" in t.note
                continue
            f = (without.ssr - with_term.ssr) / df1 / (full.ssr / full.df_resid)
            _check(t, f, df1, full.df_resid, float(sps.f.sf(f, df1, full.df_resid)))


@pytest.mark.parametrize("seed", range(10))
def test_holm_equals_statsmodels_multipletests(seed: int):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 40))
    # small p-values, ties and values near 1 all occur
    p = np.where(rng.random(m) < 0.5, rng.random(m) ** 4, rng.random(m))
    if m > 3:
        p[1] = p[2]
    ref = multipletests(p, alpha=0.05, method="holm")[1]
    assert stats.holm(p.tolist()) == pytest.approx(ref.tolist(), rel=1e-12, abs=0)
    # NaN (untested) entries are left out of the family, as if absent
    with_nan = np.insert(p, int(rng.integers(0, m + 1)), np.nan)
    out = np.asarray(stats.holm(with_nan.tolist()))
    assert np.isnan(out).sum() == 1 and out[np.isfinite(out)] == pytest.approx(ref.tolist(), rel=1e-12, abs=0)
