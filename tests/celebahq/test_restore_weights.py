"""`celebahq.restore.models.load_restorer`: foreign, damaged or malicious weight files give one clear error and run
no code (issue 16: `celebahq restore --weights` with such a file)."""

from __future__ import annotations

import pickle

import pytest
import torch

from celebahq.restore.models import WeightFileError, build_model, load_restorer, model_config

RAN = []


class Payload:
    """A pickle that would run code on load (records the call instead of doing harm)."""

    def __reduce__(self):
        return (RAN.append, ("code ran",))


def _weights(tmp_path, kind="sr", **changes):
    model = build_model(kind, {"channels": 8, "blocks": 1, "upsample_channels": 8} if kind == "sr" else
                        {"widths": [8, 8, 8], "blocks": [1, 1, 1]})
    payload = {"kind": kind, "config": model_config(model), "state_dict": model.state_dict(), **changes}
    path = tmp_path / f"{kind}.pt"
    torch.save(payload, path)
    return path, payload


def test_a_good_file_loads(tmp_path):
    path, payload = _weights(tmp_path)
    model, info = load_restorer(path, "sr")
    assert info["config"] == payload["config"] and not model.training


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"not a weight file at all"), "refused: not a file of tensors"),
    (lambda p: p.write_bytes(pickle.dumps(Payload())), "refused: not a file of tensors"),
    (lambda p: torch.save({"state_dict": {"x": Payload()}, "kind": "sr"}, p), "refused: not a file of tensors"),
    (lambda p: torch.save([1, 2, 3], p), "no state_dict"),
    (lambda p: torch.save({"kind": "cleanup", "config": {}, "state_dict": {}}, p), "weights for 'cleanup', not 'sr'"),
])
def test_foreign_and_malicious_files(tmp_path, make, message):
    path = tmp_path / "w.pt"
    make(path)
    with pytest.raises(WeightFileError, match=message) as caught:
        load_restorer(path, "sr")
    assert "weights_only" not in str(caught.value)  # never the hint to load an untrusted file unguarded
    assert RAN == []


def test_truncated_file(tmp_path):
    path, _ = _weights(tmp_path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(WeightFileError, match="not a PyTorch weight file"):
        load_restorer(path, "sr")


def test_config_and_tensors_must_fit(tmp_path):
    path, _ = _weights(tmp_path, config={"channels": 16, "blocks": 1, "upsample_channels": 8})
    with pytest.raises(WeightFileError, match="do not fit the sr network"):
        load_restorer(path, "sr")
    path, _ = _weights(tmp_path, config={"channels": 10**6, "blocks": 2, "upsample_channels": 8})
    with pytest.raises(WeightFileError, match="do not fit"):  # shapes compared on the meta device: no allocation
        load_restorer(path, "sr")
    path, _ = _weights(tmp_path, config={"colour": True})
    with pytest.raises(WeightFileError, match="does not describe a sr network"):
        load_restorer(path, "sr")


def test_non_finite_weights(tmp_path):
    path, payload = _weights(tmp_path)
    state = dict(payload["state_dict"])
    name = next(iter(state))
    state[name] = torch.full_like(state[name], float("nan"))
    torch.save(dict(payload, state_dict=state), path)
    with pytest.raises(WeightFileError, match=f"non-finite values .* in {name}"):
        load_restorer(path, "sr")
