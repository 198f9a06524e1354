"""logger=tensorboard: Lightning's TensorBoardLogger gets every evaluation of eval.every_n_steps;
the test reads the event file back (TFRecord framing, tensorboardX's Event protobuf)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from tensorboardX.proto.event_pb2 import Event

from conftest import read_csv, run_tiny


def events(path: Path) -> list[Event]:
    """Records of a TFRecord file: length (u64), its crc (u32), data, data crc (u32)."""
    data, out, i = path.read_bytes(), [], 0
    while i < len(data):
        (length,) = struct.unpack("<Q", data[i:i + 8])
        out.append(Event.FromString(data[i + 12:i + 12 + length]))
        i += 12 + length + 4
    return out


@pytest.mark.slow
def test_tensorboard_gets_the_eval_log(tmp_path):
    run_tiny(tmp_path / "run", "logger=tensorboard", "eval.every_n_steps=2", "train.max_steps=4",
             "train.save_epoch_checkpoints=false", "adapter.r=2")
    (event_file,) = (tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*")
    scalars = {(v.tag, e.step): v.simple_value for e in events(event_file) for v in e.summary.value}
    _, rows = read_csv(tmp_path / "run" / "eval_log.csv")
    assert [int(r["step"]) for r in rows] == [2, 4]
    for row in rows:
        assert scalars[("val_loss", int(row["step"]))] == pytest.approx(float(row["val_loss"]), rel=1e-5)
