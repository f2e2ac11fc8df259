"""Combined models (`c3dhash combine`, model/towers.py): one code from several trained runs, side by side.

The equality that makes it one model: through the product's encoder, a combined model's outputs are each
tower's own outputs, in order, each with its own mirrored views (data.eval_flip), as if encoded alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from c3dhash.cluster.cli import main
from c3dhash.eval.index.videos import encode_paths
from c3dhash.model.backbone import ModelError
from c3dhash.model.load import (check_config, combine_checkpoints, export_program, from_state, load_hash_net,
                                read_checkpoint, with_readouts)
from c3dhash.model.readout import fit_readout
from c3dhash.model.towers import Towers
from c3dhash.bench.tiny_retrieval import lsh_checkpoint, make_videos


def _with(state: dict, **data) -> dict:
    return {**state, "config": {**state["config"], "data": {**state["config"]["data"], **data}}}


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """Two differently seeded checkpoints of different lengths (the second with mirrored views), and videos."""
    tmp = tmp_path_factory.mktemp("towers")
    paths = [str(tmp / p) for p in make_videos(tmp, classes=2, per_class=2)]
    a = read_checkpoint(lsh_checkpoint(tmp / "a.pt", tmp, bits=24, seed=1))
    b = _with(read_checkpoint(lsh_checkpoint(tmp / "b.pt", tmp, bits=8, seed=2)), eval_flip=True)
    return tmp, paths, a, b


@pytest.fixture(scope="module")
def combined(two):
    """The two combined (a, then b with its mirrored views) and its outputs for the videos, encoded once."""
    _, paths, a, b = two
    both = combine_checkpoints([a, b], ["a.pt", "b.pt"])
    return both, encode_paths(both, paths, chunk=4, batch_videos=1)


def test_combined_outputs_equal_each_towers_own_outputs_side_by_side(two, combined):
    _, paths, a, b = two
    got = combined[1]
    parts = [encode_paths(s, paths, chunk=4, batch_videos=1) for s in (a, b)]
    assert got.skipped == {} and got.outputs.shape == (len(paths), 32)
    assert np.allclose(got.outputs, np.concatenate([p.outputs for p in parts], 1), atol=1e-5)
    # the second tower's mirrored views matter: without them its part differs
    plain = encode_paths(_with(b, eval_flip=False), paths, chunk=4, batch_videos=1)
    assert not np.allclose(got.outputs[:, 24:], plain.outputs, atol=1e-3)


def test_a_combined_checkpoint_describes_itself(two):
    _, _, a, b = two
    m = from_state(combine_checkpoints([a, b], ["a.pt", "b.pt"]))
    assert isinstance(m.net, Towers) and m.bits == 32 and not m.geometry.eval_flip
    towers = [(t["bits"], t["eval_flip"], t["source"]) for t in m.card["towers"]]
    assert towers == [(24, False, "a.pt"), (8, True, "b.pt")]
    # the fingerprint covers the order, each tower's weights and its views
    prints = {m.fingerprint, from_state(combine_checkpoints([b, a], ["b.pt", "a.pt"])).fingerprint,
              from_state(combine_checkpoints([a, _with(b, eval_flip=False)], ["a.pt", "b.pt"])).fingerprint,
              from_state(combine_checkpoints([a, a], ["a.pt", "a.pt"])).fingerprint}
    assert len(prints) == 4
    # a plain run's config cannot describe it: --config is refused with the key that differs
    with pytest.raises(ModelError, match="model.towers"):
        check_config(m.config, {**m.config, "model": {"bits": 32, "backbone": "r3d_18"}}, "both.pt")


def test_combine_refuses_other_clips_one_checkpoint_a_combined_one_and_wrong_bits(two):
    _, _, a, b = two
    with pytest.raises(ModelError, match=r"b.pt: its clips differ .*data.crop"):
        combine_checkpoints([a, _with(b, crop=[16, 16])], ["a.pt", "b.pt"])
    with pytest.raises(ModelError, match="two or more"):
        combine_checkpoints([a], ["a.pt"])
    wrong = combine_checkpoints([a, b], ["a.pt", "b.pt"])
    wrong["config"]["model"]["bits"] = 30
    with pytest.raises(ModelError, match="model.bits=30 but its towers hold 32"):
        from_state(wrong)
    with pytest.raises(ModelError, match="already a combined model"):
        combine_checkpoints([combine_checkpoints([a, b], ["a.pt", "b.pt"]), a], ["both.pt", "a.pt"])


def test_cli_writes_a_checkpoint_that_loads_exports_and_says_what_it_holds(two, capsys):
    tmp, paths, a, b = two
    torch.save(b, tmp / "b-flip.pt")
    out = tmp / "both.pt"
    assert main(["combine", "--checkpoint", str(tmp / "a.pt"), "--checkpoint", str(tmp / "b-flip.pt"),
                 "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert "24 + 8 (mirrored views) = 32 bits" in said
    m = load_hash_net(out)
    assert m.fingerprint[:19] in said
    clips = torch.randn(3, 3, m.geometry.num_frames, *m.geometry.crop)
    program = export_program(m)
    assert torch.allclose(program.module()(clips), m.net(clips), atol=1e-6)
    assert main(["combine", "--checkpoint", str(tmp / "a.pt"), "-o", str(tmp / "one.pt")]) == 2
    assert "two or more" in capsys.readouterr().err and not (tmp / "one.pt").exists()


def test_bench_neardup_measures_a_given_combined_model_with_its_own_bits_and_clips(two):
    """bench neardup --ssl both.pt: the job takes the checkpoint's bits and clip geometry (data.eval_flip off:
    the towers mirror inside the net), not the self-supervised config's."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import bench_neardup as bn
    tmp, _, a, b = two
    torch.save(combine_checkpoints([a, b], ["a.pt", "b.pt"]), tmp / "both-bench.pt")
    setup = bn.Setup(root=str(tmp), work=str(tmp / "work"))
    job = bn.job_config(setup, "ssl", tmp, (), 0, config=setup.ssl_config)
    assert job.data.eval_flip and job.model.bits == 48 and job.data.crop == (24, 24)  # library-cpu's
    net, job, note = bn.train(job, str(tmp / "both-bench.pt"))
    assert isinstance(net, Towers) and job.model.bits == 32 and not job.data.eval_flip
    assert job.data.crop == tuple(a["config"]["data"]["crop"]) and "32 bits" in note


def test_readouts_are_the_fitted_affine_map_of_each_towers_outputs(two, combined):
    """A tower's read-out applied per clip inside the net gives (video output - centre) @ matrix, exactly: the map
    is affine, so it commutes with the mean over clips; the fit uses only the outputs (no labels)."""
    _, paths, a, b = two
    both, plain = combined[0], combined[1].outputs
    fitted = with_readouts(both, ["hyperplanes:40", "itq:3"], plain, seed=5)
    m = from_state(fitted)
    assert m.bits == 40 + 3 * 8 and [t.get("readout") for t in m.card["towers"]] == ["hyperplanes:40", "itq:3"]
    got = encode_paths(fitted, paths, chunk=4, batch_videos=1).outputs
    ro = [fit_readout(s, x, seed=5 + i) for i, (s, x) in enumerate([("hyperplanes:40", plain[:, :24]),
                                                                   ("itq:3", plain[:, 24:])])]
    want = np.concatenate([(plain[:, :24] - ro[0].centre) @ ro[0].matrix,
                           (plain[:, 24:] - ro[1].centre) @ ro[1].matrix], 1)
    assert np.allclose(got, want, atol=1e-4)
    clips = torch.randn(2, 3, m.geometry.num_frames, *m.geometry.crop)
    assert torch.allclose(export_program(m).module()(clips), m.net(clips), atol=1e-5)  # exports with it
    # ITQ: an orthogonal rotation, repeated; each tower keeps "sign" when asked
    r = ro[1].matrix[:, :8]
    assert np.allclose(r.T @ r, np.eye(8), atol=1e-5) and np.array_equal(ro[1].matrix[:, 8:16], r)
    assert with_readouts(both, ["sign", "sign"], plain)["config"]["model"]["bits"] == 32
    # the fingerprint covers the read-out; plain combined models keep theirs
    assert m.fingerprint != from_state(both).fingerprint
    assert m.fingerprint != from_state(with_readouts(both, ["hyperplanes:40", "itq:3"], plain, seed=6)).fingerprint


@pytest.mark.parametrize("spec", ["hyperplanes", "itq:0", "pca:2", "hyperplanes:-3"])
def test_a_bad_readout_names_the_forms(spec):
    with pytest.raises(ModelError, match="hyperplanes:M"):
        fit_readout(spec, np.zeros((4, 8)))


def test_cli_fits_read_outs_on_a_folder_and_the_index_reads_the_model(two, combined, capsys):
    tmp, paths, a, b = two
    out = tmp / "fitted.pt"
    videos = str(Path(paths[0]).parents[1])  # the class folders of make_videos
    argv = ["combine", "--checkpoint", str(tmp / "a.pt"), "--checkpoint", str(tmp / "b.pt"), "-o", str(out)]
    assert main([*argv, "--read-out", "hyperplanes:40"]) == 2  # one per checkpoint
    assert "2 --checkpoint" in capsys.readouterr().err
    assert main([*argv, "--read-out", "sign", "--read-out", "itq:2"]) == 2 and not out.exists()  # needs --fit
    assert "--fit DIR" in capsys.readouterr().err
    assert main([*argv, "--read-out", "hyperplanes:40", "--read-out", "itq:2", "--fit", videos]) == 0
    said = capsys.readouterr().out
    assert f"fitting read-outs on {len(paths)} videos" in said and "40 (hyperplanes:40) + 16 (itq:2) = 56 bits" in said
    m = load_hash_net(out)
    plain = combined[1].outputs  # the first tower's part is a.pt's whatever the second's views
    want = fit_readout("hyperplanes:40", plain[:, :24], seed=0)
    got = encode_paths(read_checkpoint(out), paths, chunk=4, batch_videos=1).outputs
    assert m.bits == 56 and np.allclose(got[:, :40], (plain[:, :24] - want.centre) @ want.matrix, atol=1e-4)
