"""Retrieval metrics against an independent brute-force reference (numpy stable argsort) on codes with heavy
ties, K beyond the database, queries without relevant items; the expected-AP-over-ties variant against an
enumeration of every tie order; the `c3dhash eval` command and its bad-input errors.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_metrics.py
"""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from c3dhash.cluster.cli import main
from c3dhash.eval.codes import Codes, CodesError, pack_bits, save_codes
from c3dhash.eval.metrics.exact import MissingLabelWarning, all_ks, evaluate, per_query_stats, prepare_db
from code_helpers import clustered_bits, reference_distances

KS = (1, 3, 10, 100, 5000)  # 5000 > every database here: K' = N


def reference_metrics(qb, ql, dbb, dl, ks=KS):
    """Textbook definitions over the stable ranking, one query at a time."""
    dist = reference_distances(qb, dbb)
    order = np.argsort(dist, axis=1, kind="stable")
    n, bits = dbb.shape
    out = {"ap": [], "k_rel": {k: [] for k in ks}, "k_div": {k: [] for k in ks}, "p": {k: [] for k in ks},
           "prec_r": [], "rec_r": []}
    for i in range(len(qb)):
        rel = (dl[order[i]] == ql[i]).astype(float)
        hits = np.cumsum(rel)
        prec = hits / np.arange(1, n + 1)
        out["ap"].append((prec * rel).sum() / rel.sum() if rel.sum() else 0.0)
        for k in ks:
            kk = min(k, n)
            s = (prec[:kk] * rel[:kk]).sum()
            out["k_rel"][k].append(s / rel[:kk].sum() if rel[:kk].sum() else 0.0)
            out["k_div"][k].append(s / kk)
            out["p"][k].append(rel[:kk].sum() / kk)
        d_sorted = dist[i, order[i]]
        retrieved = np.array([(d_sorted <= r).sum() for r in range(bits + 1)])
        rel_retrieved = np.array([rel[d_sorted <= r].sum() for r in range(bits + 1)])
        out["prec_r"].append(np.where(retrieved > 0, rel_retrieved / np.maximum(retrieved, 1), 0.0))
        out["rec_r"].append(rel_retrieved / rel.sum() if rel.sum() else np.zeros(bits + 1))
    return out


def tied_codes(n, bits, rng, centres=5, flip=0.08):
    """Bits around a few centres and each code's centre as its label."""
    return clustered_bits(n, bits, rng, centres=centres, flip=flip)


def as_codes(b, labels):
    return Codes(pack_bits(b), b.shape[1], labels, [f"x{i}" for i in range(len(b))])


# (bits, N): 8 bits = heavy ties; N = 2500 crosses the kernel's 1024-item chunks; 100 bits = 2 words.
@pytest.mark.parametrize("method", ["bitsliced", "words"])
@pytest.mark.parametrize("bits, n", [(8, 60), (8, 2500), (16, 700), (100, 400)])
def test_metrics_match_bruteforce(bits, n, method):
    rng = np.random.default_rng(bits * n)
    dbb, _ = tied_codes(n, bits, rng)
    dl = rng.integers(0, 6, n)
    dbb[10:30] = dbb[9]  # duplicates: pure index-order ties
    qb, _ = tied_codes(40, bits, rng)
    ql = rng.integers(0, 8, 40)  # labels 6 and 7 have no relevant item in the database
    qb[0] = dbb[9]
    missing = int((~np.isin(ql, dl)).sum())
    assert missing
    with pytest.warns(MissingLabelWarning, match=f"{missing} of 40 queries have a label that never occurs"):
        m = evaluate(as_codes(qb, ql), as_codes(dbb, dl), map_at_k_rel=KS, map_at_k=KS, precision_at_k=KS,
                     method=method)
    ref = reference_metrics(qb, ql, dbb, dl)
    close = dict(rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(m["map_all"], np.mean(ref["ap"]), **close)
    for k in KS:
        np.testing.assert_allclose(m["map_at_k_rel"][k], np.mean(ref["k_rel"][k]), **close)
        np.testing.assert_allclose(m["map_at_k"][k], np.mean(ref["k_div"][k]), **close)
        np.testing.assert_allclose(m["precision_at_k"][k], np.mean(ref["p"][k]), **close)
    assert m["pr_curve"]["radius"] == list(range(bits + 1))
    np.testing.assert_allclose(m["pr_curve"]["precision"], np.mean(ref["prec_r"], axis=0), **close)
    np.testing.assert_allclose(m["pr_curve"]["recall"], np.mean(ref["rec_r"], axis=0), **close)
    assert (m["num_queries"], m["num_db"], m["bits"]) == (40, n, bits)
    assert "map_all_expected" not in m


# Widths: 1 word padded (1, 48), exact words (64, 256), padded multi-word (96, 130), the planes' maximum (448);
# N around the groups (256 items on AVX2, 512 on AVX-512) and beyond a chunk of groups.
@pytest.mark.parametrize("bits", [1, 48, 64, 96, 130, 256, 448])
@pytest.mark.parametrize("n, kind", [(1, "tied"), (255, "tied"), (257, "uniform"), (513, "tied"), (9000, "tied"),
                                     (40000, "uniform")])
def test_bit_sliced_scan_equals_word_major(bits, n, kind):
    """The two layouts' per-query values (AP, @K sums, histograms, expected-ties AP) are equal, not close."""
    rng = np.random.default_rng(bits + n)
    if kind == "tied":
        dbb, dl = tied_codes(n, bits, rng, centres=3, flip=min(0.3, 2 / bits))
        dbb[: n // 3] = dbb[0]  # a third of the database one code: index-order ties within and across groups
    else:
        dbb, dl = rng.integers(0, 2, (n, bits)).astype(bool), rng.integers(0, 4, n)
    dl[: n // 2] = 1  # one label holds half the database (many relevant items per group)
    qb, _ = tied_codes(24, bits, rng, centres=3)
    ql = rng.integers(0, 6, 24)  # labels 4, 5: no relevant item
    qb[:2] = dbb[0], ~dbb[0]
    db = as_codes(dbb, dl)
    q = as_codes(qb, ql)
    ks = all_ks(KS, KS, KS)
    got = {method: per_query_stats(q.codes, q.labels, prepare_db(db, method=method), ks, expected_ties=True)
           for method in ("bitsliced", "words")}
    assert prepare_db(db, method="bitsliced").planes is not None and prepare_db(db, method="words").dbT is not None
    for key, value in got["words"].items():
        np.testing.assert_array_equal(got["bitsliced"][key], value, err_msg=key)
    assert got["words"]["hist"].sum() == 24 * n


def test_method_errors():
    db = as_codes(np.zeros((3, 449), bool), np.zeros(3, int))
    with pytest.raises(CodesError, match="method='bitsliced' takes codes of at most 448 bits, got 449"):
        prepare_db(db, method="bitsliced")
    assert prepare_db(db).planes is None  # "auto" takes the word-major scan beyond the planes' width
    with pytest.raises(CodesError, match="evaluate: method='mih'; choose one of auto, bitsliced, words"):
        prepare_db(db, method="mih")


def test_no_missing_label_warning_when_every_label_occurs(recwarn):
    rng = np.random.default_rng(3)
    dbb, dl = tied_codes(200, 16, rng)
    evaluate(as_codes(dbb[:9], dl[:9]), as_codes(dbb, dl))
    assert not [w for w in recwarn if issubclass(w.category, MissingLabelWarning)]


def test_default_k_lists_come_from_the_config():
    """One list of default K values: evaluate, evaluate_sharded and EvalConfig share eval/config.py's."""
    import inspect

    from c3dhash.eval import config
    from c3dhash.eval.metrics.sharded import evaluate_sharded
    for fn in (evaluate, evaluate_sharded):
        p = inspect.signature(fn).parameters
        assert p["map_at_k_rel"].default is config.MAP_AT_K_REL and p["map_at_k"].default is config.MAP_AT_K
        assert p["precision_at_k"].default is config.PRECISION_AT_K
    c = config.EvalConfig()
    assert (c.map_at_k_rel, c.map_at_k, c.precision_at_k) == (config.MAP_AT_K_REL, config.MAP_AT_K,
                                                              config.PRECISION_AT_K)


def test_label_values_do_not_matter():
    """Only label equality counts: shifting labels past 16 bits or below zero changes nothing (==)."""
    rng = np.random.default_rng(9)
    dbb, dl = tied_codes(500, 10, rng)
    qb, ql = tied_codes(20, 10, rng)
    m = evaluate(as_codes(qb, ql), as_codes(dbb, dl), expected_ties=True)
    for shift in (70_000, -3, -(2**40)):
        assert evaluate(as_codes(qb, ql + shift), as_codes(dbb, dl + shift), expected_ties=True) == m


def test_map_all_of_a_known_ranking():
    """One query, distances [1, 0, 1, 0], relevant = items 0 and 1: ranking 1, 3, 0, 2 (ties by index);
    relevant at ranks 1 and 3 -> AP = (1/1 + 2/3) / 2."""
    db = np.array([[1, 0], [0, 0], [0, 1], [0, 0]], bool)
    m = evaluate(as_codes(np.array([[0, 0]], bool), np.array([0])), as_codes(db, np.array([0, 0, 1, 1])),
                 map_at_k_rel=(2,), map_at_k=(2,), precision_at_k=(2,))
    assert m["map_all"] == pytest.approx((1 + 2 / 3) / 2, abs=1e-15)
    assert m["map_at_k_rel"][2] == 1.0 and m["map_at_k"][2] == 0.5 and m["precision_at_k"][2] == 0.5
    assert m["pr_curve"]["precision"] == [0.5, 0.5, 0.5] and m["pr_curve"]["recall"] == [0.5, 1.0, 1.0]


def expected_ap_by_enumeration(dist, rel):
    """Mean AP over every order of tied items (each distance bucket permuted independently)."""
    buckets = [np.flatnonzero(dist == d) for d in np.unique(dist)]
    aps = []
    for perms in itertools.product(*[itertools.permutations(b) for b in buckets]):
        r = rel[np.concatenate(perms)].astype(float)
        aps.append((np.cumsum(r) / np.arange(1, len(r) + 1) * r).sum() / r.sum())
    return np.mean(aps)


def test_expected_ties_matches_enumeration():
    rng = np.random.default_rng(5)
    dbb = rng.integers(0, 2, (8, 3)).astype(bool)  # 3 bits, 8 items: buckets of up to ~4 tied items
    dl = rng.integers(0, 2, 8)
    qb = rng.integers(0, 2, (4, 3)).astype(bool)
    ql = np.array([0, 1, 0, 1])
    m = evaluate(as_codes(qb, ql), as_codes(dbb, dl), expected_ties=True)
    dist = reference_distances(qb, dbb)
    ref = [expected_ap_by_enumeration(dist[i], dl == ql[i]) if (dl == ql[i]).any() else 0.0 for i in range(4)]
    np.testing.assert_allclose(m["map_all_expected"], np.mean(ref), rtol=1e-12)


def expected_ap_direct(dist, rel):
    """McSherry & Najork's per-position formula, summed term by term (no harmonic-number shortcuts)."""
    total, r_tot = 0.0, rel.sum()
    before = rel_before = 0
    for d in np.unique(dist):
        n, r = int((dist == d).sum()), int(rel[dist == d].sum())
        for i in range(before + 1, before + n + 1):
            slope = (r - 1) / (n - 1) if n > 1 else 0.0
            total += (r / n) * (rel_before + 1 + (i - before - 1) * slope) / i
        before, rel_before = before + n, rel_before + r
    return total / r_tot


def test_expected_ties_large_buckets():
    """Buckets of hundreds of items take the closed-form harmonic branches of the kernel."""
    rng = np.random.default_rng(11)
    dbb = rng.integers(0, 2, (3000, 4)).astype(bool)  # 4 bits: 5 buckets of ~200-1100 items
    dl = rng.integers(0, 3, 3000)
    qb, ql = dbb[:3], np.array([0, 1, 2])
    m = evaluate(as_codes(qb, ql), as_codes(dbb, dl), expected_ties=True)
    dist = reference_distances(qb, dbb)
    ref = [expected_ap_direct(dist[i], dl == ql[i]) for i in range(3)]
    np.testing.assert_allclose(m["map_all_expected"], np.mean(ref), rtol=1e-11)
    assert m["map_all_expected"] != m["map_all"]  # ties by index differ from the average over tie orders


def test_bad_inputs():
    rng = np.random.default_rng(0)
    q = as_codes(rng.integers(0, 2, (3, 48)).astype(bool), np.zeros(3, int))
    db64 = as_codes(rng.integers(0, 2, (5, 64)).astype(bool), np.zeros(5, int))
    with pytest.raises(CodesError, match="48-bit codes but .* 64-bit codes"):
        evaluate(q, db64)
    empty = Codes(np.zeros((0, 1), np.uint64), 48, np.zeros(0, int), np.zeros(0, str))
    with pytest.raises(CodesError, match="database is empty"):
        evaluate(q, empty)
    with pytest.raises(CodesError, match="K must be >= 1"):
        evaluate(q, q, map_at_k=(0,))
    with pytest.raises(CodesError, match=r"'labels' must be integers \[N=3\]"):
        Codes(q.codes, 48, np.zeros(2, int), ["a", "b", "c"])


def test_cli_eval_writes_json(tmp_path, capsys):
    rng = np.random.default_rng(2)
    qb, ql = tied_codes(30, 48, rng)
    dbb, dl = tied_codes(400, 48, rng)
    save_codes(tmp_path / "q.npz", as_codes(qb, ql))
    save_codes(tmp_path / "d.npz", as_codes(dbb, dl))
    out = tmp_path / "m" / "metrics.json"
    assert main(["eval", "--query", str(tmp_path / "q.npz"), "--db", str(tmp_path / "d.npz"),
                 "--map-at-k-rel", "70", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mAP@all" in text and "mAP@70 / relevant in top 70 (CSQ)" in text
    got = json.loads(out.read_text())
    ref = evaluate(as_codes(qb, ql), as_codes(dbb, dl), map_at_k_rel=(70,))
    assert got["map_all"] == ref["map_all"] and got["map_at_k_rel"] == {"70": ref["map_at_k_rel"][70]}
    assert len(got["pr_curve"]["precision"]) == 49
    assert main(["search", "--index", str(tmp_path / "d.npz"), "--query", str(tmp_path / "q.npz"),
                 "--top", "5", "--json", str(tmp_path / "s.json")]) == 0
    res = json.loads((tmp_path / "s.json").read_text())
    assert len(res["queries"]) == 30 and len(res["queries"][0]["results"]) == 5


def test_cli_bad_input_exits_2_without_output(tmp_path, capsys):
    rng = np.random.default_rng(4)
    save_codes(tmp_path / "q.npz", as_codes(rng.integers(0, 2, (3, 48)).astype(bool), np.zeros(3, int)))
    save_codes(tmp_path / "d64.npz", as_codes(rng.integers(0, 2, (4, 64)).astype(bool), np.zeros(4, int)))
    (tmp_path / "corrupt.npz").write_bytes(b"\x00" * 100)
    out = tmp_path / "metrics.json"
    cases = (("d64.npz", "48-bit codes but"), ("corrupt.npz", "corrupt"), ("missing.npz", "not found"))
    for db, message in cases:
        assert main(["eval", "--query", str(tmp_path / "q.npz"), "--db", str(tmp_path / db),
                     "--json", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("c3dhash eval: error: ") and message in err and "Traceback" not in err
        assert str(tmp_path / db) in err
    assert main(["search", "--index", str(tmp_path / "d64.npz"), "--query", str(tmp_path / "q.npz")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.npz", "d64.npz", "q.npz"]


@pytest.mark.subprocess
def test_evaluation_leaves_torch_thread_count_alone():
    """A training worker pinned to 1 torch thread must stay at 1 after an in-process validation (numba's omp
    layer used to reset the shared OpenMP count to every core, oversubscribing the CPU workers)."""
    import os
    import subprocess
    import sys
    code = (
        "import numpy as np, torch\n"
        "torch.set_num_threads(1)\n"
        "torch.nn.Conv3d(64, 64, 3, padding=1)(torch.randn(8, 64, 8, 16, 16)).sum().backward()  # a training step\n"
        "from c3dhash.eval.codes import Codes, pack_bits\n"
        "from c3dhash.eval.metrics.exact import evaluate\n"
        "rng = np.random.default_rng(0)\n"
        "mk = lambda n: Codes(codes=pack_bits(rng.standard_normal((n, 48)) > 0), bits=48,\n"
        "                     labels=np.arange(n) % 4, ids=np.array([str(i) for i in range(n)]))\n"
        "evaluate(mk(40), mk(200))\n"
        "print('threads', torch.get_num_threads())\n")
    env = {**os.environ, "NUMBA_NUM_THREADS": "3"}
    env.pop("NUMBA_THREADING_LAYER", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip().splitlines()[-1] == "threads 1", out.stdout + out.stderr
