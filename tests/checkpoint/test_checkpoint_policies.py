"""Save triggers and retention policies, alone and combined."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from modelkeep.checkpoint import (AnyOf, EveryNEpochs, EveryNSeconds, EveryNSteps, KeepBestN, KeepEveryNth,
                                  KeepLastN, KeepUnion, OnBestMetric, Position, SaveEvent)
from modelkeep.checkpoint.policies import find_monitor
from modelkeep.errors import ConfigError


def step_event(step, epoch=0, batch=1, t=0.0, **metrics):
    return SaveEvent(Position(epoch, batch, step), metrics, epoch_end=False, time=t)


def epoch_event(epoch, step=0, t=0.0, **metrics):
    return SaveEvent(Position(epoch, 0, step), metrics, epoch_end=True, time=t)


@dataclass
class Record:
    name: str
    step: int
    metrics: dict = field(default_factory=dict)


def test_every_n_steps_fires_on_step_events_only():
    trigger = EveryNSteps(3)
    assert [s for s in range(1, 10) if trigger.should_save(step_event(s))] == [3, 6, 9]
    assert not trigger.should_save(epoch_event(1, step=6))


def test_every_n_epochs_counts_completed_epochs():
    trigger = EveryNEpochs(2)
    assert [e for e in range(1, 7) if trigger.should_save(epoch_event(e))] == [2, 4, 6]
    assert not trigger.should_save(step_event(2, epoch=2))


def test_every_n_seconds_restarts_its_clock_on_any_save():
    trigger = EveryNSeconds(10)
    assert not trigger.should_save(step_event(1, t=100.0))   # the clock starts at the first event
    assert not trigger.should_save(step_event(2, t=105.0))
    assert trigger.should_save(step_event(3, t=110.0))
    trigger.saved(step_event(3, t=110.0))
    assert not trigger.should_save(step_event(4, t=115.0))
    assert trigger.should_save(step_event(5, t=121.0))


def test_on_best_metric_min_and_max_and_state_round_trip():
    low = OnBestMetric("val_loss")
    fired = [low.should_save(epoch_event(e, val_loss=v)) for e, v in enumerate([0.5, 0.6, 0.4, 0.4, math.nan], 1)]
    assert fired == [True, False, True, False, False]
    assert not low.should_save(step_event(1))  # no metric: no decision
    high = OnBestMetric("val_accuracy", mode="max", min_delta=0.01)
    assert [high.should_save(epoch_event(e, val_accuracy=v)) for e, v in enumerate([0.9, 0.905, 0.92], 1)] == \
        [True, False, True]
    copy = OnBestMetric("val_loss")
    copy.load_state_dict(low.state_dict())
    assert copy.best == 0.4 and not copy.should_save(epoch_event(9, val_loss=0.45))


def test_any_of_asks_every_trigger_and_keeps_their_state():
    best = OnBestMetric("val_loss")
    trigger = AnyOf(EveryNEpochs(1), best)
    assert trigger.should_save(epoch_event(1, val_loss=1.0))
    assert best.best == 1.0  # AnyOf did not short-circuit past OnBestMetric
    restored = AnyOf(EveryNEpochs(1), OnBestMetric("val_loss"))
    restored.load_state_dict(trigger.state_dict())
    assert restored.triggers[1].best == 1.0
    combined = AnyOf(EveryNSteps(4), EveryNEpochs(1))
    assert [combined.should_save(step_event(s)) for s in (3, 4)] == [False, True]
    assert combined.should_save(epoch_event(1, step=5))


def test_retention_policies_and_union():
    records = [Record(f"c{s}", s, {"val_loss": loss}) for s, loss in
               [(100, 0.9), (200, 0.5), (300, 0.7), (400, 0.4), (500, 0.8), (600, 0.6)]]
    records.append(Record("c700", 700, {}))
    assert KeepLastN(2).select(records) == {"c600", "c700"}
    assert KeepBestN(2, "val_loss").select(records) == {"c400", "c200"}
    assert KeepBestN(1, "val_loss", mode="max").select(records) == {"c100"}
    assert KeepEveryNth(300).select(records) == {"c300", "c600"}
    union = KeepUnion(KeepLastN(1), KeepBestN(1, "val_loss"), KeepEveryNth(500))
    assert union.select(records) == {"c700", "c400", "c500"}
    assert find_monitor(union) == ("val_loss", "min")
    assert find_monitor(KeepLastN(3), AnyOf(EveryNSteps(1), OnBestMetric("acc", "max"))) == ("acc", "max")


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="positive"):
        EveryNSteps(0)
    with pytest.raises(ConfigError, match="'min' or 'max'"):
        KeepBestN(1, "loss", mode="lowest")
    with pytest.raises(ConfigError):
        AnyOf()
