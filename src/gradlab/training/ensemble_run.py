"""Training several runs as one ensemble: each member a full run with its own folder, computed together.

Runs that differ only in seed, learning rate, norm clipping and init (:mod:`gradlab.training.ensemble.grouping`)
share every shape, so their training steps can be one batched model
(:class:`gradlab.training.ensemble.EnsembleModel`). Everything else stays per run:
each member is the :class:`TrainState` its single run would have (model built
from its own seed, its own data order, its own callbacks writing its own
folder: history, gradients, gates, Jacobian, predictions, metrics,
checkpoints). The member's model is a window onto the ensemble
(:mod:`gradlab.training.ensemble_members`): its
parameters share storage with the ensemble's stacked parameters, so
validation, diagnostics, checkpoints and testing see the member's current
weights without copying, and a checkpoint loaded into it lands in the
ensemble.

What differs from a single run is only how each training step is computed:
one batched forward and hand-written backward for all members
(:class:`gradlab.training.ensemble.EnsembleTrainer`), per-member clipping, divergence
and optimiser update. On a GPU validation runs batched too, each member's loss
reduced exactly as :func:`gradlab.training.evaluate.evaluate` reduces it. Results
equal the single runs' up to the rounding of batched matmuls (1e-9 relative
in float64; tested). A member that diverges is finished and written at once;
the others go on. A member that fails (a damaged checkpoint, an error in one of
its callbacks or in writing its folder) is frozen like a diverged one and
reported alone (:class:`MemberFailures`); the others train on. Times in the
summary (``time_per_epoch``, ``wall_time``) are the ensemble's divided by its
``ensemble_size``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from gradlab.config import RunConfig
from gradlab.data import DataSplits, iterate_batches
from gradlab.data.from_config import load_data
from gradlab.store.io import RunFolder
from gradlab.store.locking import SweepLockLost
from gradlab.training.callbacks import Diagnostics, GradientRecording
from gradlab.training.ensemble import EnsembleGradientRecorder, EnsembleModel, EnsembleOptimiser, EnsembleTrainer
from gradlab.training.ensemble.gates import member_gate_columns
from gradlab.training.ensemble.grouping import ensemble_blocker, ensemble_key
from gradlab.training.ensemble_members import MemberOptimiser, MemberRecording, evaluate_members, share_parameters
from gradlab.training.epoch_checkpoint import CHECKPOINT_EVERY, check_checkpoint_every
from gradlab.training.evaluate import batch_correct, batch_loss, evaluate, scored_targets
from gradlab.training.loop import Callback, TrainState
from gradlab.training.progress import ProgressBar
from gradlab.training.run import RunResult, finish_run, prepare, read_run, standard_callbacks


class MemberFailures(RuntimeError):
    """Some members of an ensemble failed; the others ended and their folders are written.

    Attributes:
        results: one entry per run, in order: its :class:`RunResult`, or None for a failed run.
        errors: the failed runs' errors, by run id.
    """

    def __init__(self, results: list[RunResult | None], errors: dict[str, BaseException]) -> None:
        self.results, self.errors = results, errors
        super().__init__("; ".join(f"run {run_id} failed: {type(error).__name__}: {error}"
                                   for run_id, error in errors.items()))


def _isolable(error: BaseException) -> bool:
    """Whether ``error`` belongs to one member: not an interrupt, and not the lost sweep lock (which stops all)."""
    return isinstance(error, Exception) and not isinstance(error, SweepLockLost)


def _resume_point(run_dir: Path | None) -> int:
    """Epochs the run folder's checkpoint holds (0 without one; -1 if it cannot be read)."""
    path = RunFolder(run_dir).file("checkpoint") if run_dir is not None else None
    if path is None or not path.is_file():
        return 0
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epochs_done"])
    except Exception:  # noqa: BLE001 - the member's own resume names the damage
        return -1


def check_members(configs: Sequence[RunConfig]) -> None:
    """Raise ``ValueError`` unless ``configs`` can train as one ensemble."""
    if not configs:
        raise ValueError("an ensemble needs at least one run")
    first = ensemble_key(configs[0])
    for config in configs:
        reason = ensemble_blocker(config)
        if reason is not None:
            raise ValueError(f"run {config.run_id} cannot train in an ensemble: {reason}; use --ensemble off")
        if ensemble_key(config) != first:
            raise ValueError(f"runs {configs[0].run_id} and {config.run_id} differ in more than seed, learning rate, "
                             "norm clipping and init; they cannot train in one ensemble")


def train_ensemble(
    configs: Sequence[RunConfig],
    *,
    data: DataSplits | None = None,
    run_dirs: Sequence[str | os.PathLike] | None = None,
    command: list[str] | None = None,
    progress: bool = False,
    callbacks: Sequence[Sequence[Callback]] | None = None,
    checkpoint_every: float = CHECKPOINT_EVERY,
) -> list[RunResult]:
    """Train ``configs`` (runs differing only in seed, lr, clipping, init) as one ensemble; each as :func:`train_run` would.

    Args:
        configs: the runs.
        data: their dataset; loaded from ``configs[0].data`` when None.
        run_dirs: one folder per run (or None: no folders). A folder holding an
            ended run is read back; one with a checkpoint resumes from it.
            Members whose checkpoints hold different epochs train as separate
            ensembles.
        command: the command line, stored in each ``config.json``.
        progress: a progress bar over the ensemble's steps (one line per epoch in a log).
        callbacks: more callbacks for each run (one sequence per run, in order), acting after
            the standard ones at each hook, as ``train_run``'s ``callbacks`` do.
        checkpoint_every: seconds of training between epoch checkpoints (0: every epoch); the
            members share their training time, so they checkpoint at the same epochs.

    Returns:
        One :class:`RunResult` per run, in order.

    Raises:
        ValueError: runs that cannot share an ensemble (:func:`check_members`).
        MemberFailures: some runs failed (each alone: the others trained and were written).
    """
    check_members(configs)
    check_checkpoint_every(checkpoint_every)
    dirs = [Path(run_dir) for run_dir in run_dirs] if run_dirs is not None else [None] * len(configs)
    if len(dirs) != len(configs):
        raise ValueError(f"expected {len(configs)} run folders, got {len(dirs)}")
    extras = [list(extra) for extra in callbacks] if callbacks is not None else [[] for _ in configs]
    if len(extras) != len(configs):
        raise ValueError(f"expected {len(configs)} callback lists (one per run), got {len(extras)}")
    results: list[RunResult | None] = [None] * len(configs)
    errors: dict[int, BaseException] = {}
    waves: dict[int, list[int]] = {}
    for index, run_dir in enumerate(dirs):
        try:
            if run_dir is not None and RunFolder(run_dir).ended:
                results[index] = read_run(run_dir)
                continue
        except Exception as error:  # noqa: BLE001 - one member's damaged folder is its own failure
            if not _isolable(error):
                raise
            errors[index] = error
            continue
        waves.setdefault(_resume_point(run_dir), []).append(index)
    if waves and data is None:
        data = load_data(configs[0].data, progress=progress)
    for indices in waves.values():
        trained, failed = _train_together([configs[i] for i in indices], data, [dirs[i] for i in indices],
                                          command, progress, [extras[i] for i in indices], checkpoint_every)
        for member, index in enumerate(indices):
            results[index] = trained[member]
            if member in failed:
                errors[index] = failed[member]
    if errors:
        raise MemberFailures(results, {configs[index].run_id: errors[index] for index in sorted(errors)})
    return results


def _train_together(configs: list[RunConfig], data: DataSplits, dirs: list[Path | None], command: list[str] | None,
                    progress: bool, extras: list[list[Callback]], checkpoint_every: float,
                    ) -> tuple[list[RunResult | None], dict[int, BaseException]]:
    """Train one wave of members; their results (None where failed) and the failed members' errors by index."""
    states, kept, failed = [], [], {}  # kept: the index of each prepared member
    for index, (config, run_dir) in enumerate(zip(configs, dirs)):
        try:
            state = prepare(config, data, run_dir, progress=False, optimiser=False)  # the ensemble's is set below
        except Exception as error:  # noqa: BLE001 - one member's failure is its own
            if not _isolable(error):
                raise
            failed[index] = error
            continue
        states.append(state)
        kept.append(index)
        data = state.data  # on its device and dtype: later members reuse it
    results: list[RunResult | None] = [None] * len(configs)
    if not states:
        return results, failed
    fit = _fit_together([configs[i] for i in kept], states, command, progress, [extras[i] for i in kept],
                        checkpoint_every)
    fit.run()
    for member, index in enumerate(kept):
        results[index] = fit.results[member]
        if member in fit.errors:
            failed[index] = fit.errors[member]
    return results, failed


def _fit_together(configs: list[RunConfig], states: list[TrainState], command: list[str] | None,
                  progress: bool, extras: list[list[Callback]], checkpoint_every: float) -> EnsembleFit:
    """Prepared members as one ensemble: a batched model sharing their weights, its optimiser and trainer."""
    data = states[0].data
    ensemble = EnsembleModel([state.model for state in states])
    for member, state in enumerate(states):
        share_parameters(ensemble, member, state.model)
    train = configs[0].train
    optimiser = EnsembleOptimiser(list(ensemble.parameters()), train.optimiser, [c.train.lr for c in configs],
                                  weight_decay=train.weight_decay)
    recorder = None
    if train.record_every is not None:
        recorder = EnsembleGradientRecorder(ensemble, every=train.record_every,
                                            run_infos=[state.run_info for state in states])
    task = data.task
    trainer = EnsembleTrainer(ensemble, optimiser, clip_grad_norm=[config.train.clip_grad_norm for config in configs],
                              clip_grad_value=train.clip_grad_value, recorder=recorder,
                              loss_fn=lambda logits, y: batch_loss(logits, y, task))
    for member, state in enumerate(states):
        state.optimiser = MemberOptimiser(optimiser, member, state.model)
        state.ensemble_size = len(states)
        callbacks = standard_callbacks(state, command, progress=False, checkpoint_every=checkpoint_every)
        state.callbacks = [MemberRecording(state, train.record_every, recorder, member)
                           if isinstance(callback, GradientRecording) else callback for callback in callbacks]
        state.callbacks += extras[member]
    return EnsembleFit(ensemble, trainer, states, progress=progress)


class EnsembleFit:
    """:func:`gradlab.training.loop.fit` for the members of an ensemble (see the module docstring)."""

    def __init__(self, ensemble: EnsembleModel, trainer: EnsembleTrainer, states: list[TrainState], *,
                 progress: bool) -> None:
        self.ensemble, self.trainer, self.states, self.progress = ensemble, trainer, states, progress
        self.results: list[RunResult | None] = [None] * len(states)
        self.errors: dict[int, BaseException] = {}  # failed members: frozen, never written again
        self.train = states[0].config.train
        self.data = states[0].data
        self.scored = scored_targets(self.data.task, self.data.class_names)

    @property
    def live(self) -> list[int]:
        return [member for member, result in enumerate(self.results) if result is None and member not in self.errors]

    @contextlib.contextmanager
    def isolated(self, member: int):
        """Run one member's own work: an error there fails (and freezes) that member alone."""
        try:
            yield
        except Exception as error:  # noqa: BLE001 - see _isolable
            if not _isolable(error):
                raise
            self.errors[member] = error
            self.trainer.active[member] = False  # frozen like a diverged member: its stand-in batch changes nothing

    def run(self) -> list[RunResult | None]:
        """Train every member; their results (None for a member that failed: see :attr:`errors`)."""
        for member, state in enumerate(self.states):
            with self.isolated(member):
                for callback in state.callbacks:
                    callback.on_fit_start(state)
        if len({(self.states[member].step, self.states[member].epochs_done) for member in self.live}) > 1:
            raise RuntimeError("ensemble members resumed at different steps; train them in separate ensembles")
        if not self.live:
            return self.results
        start = self.states[self.live[0]].epochs_done
        per_epoch = math.ceil(len(self.data.train) / self.train.batch_size)
        if self.train.max_steps_per_epoch is not None:
            per_epoch = min(per_epoch, self.train.max_steps_per_epoch)
        label = f"{self.states[0].config.run_id} +{len(self.states) - 1}"
        with ProgressBar(total=per_epoch * self.train.epochs, initial=per_epoch * start, desc=label,
                         unit="step", enabled=self.progress) as bar:
            if start == 0:
                self.validate(self.live)
            for epoch in range(start, self.train.epochs):
                if not self.live:
                    break
                self.epoch(epoch, bar)
        for member in self.live:
            self.finish(member)
        return self.results

    def epoch(self, epoch: int, bar: ProgressBar) -> None:
        train, live = self.train, self.live
        for member in live:
            self.states[member].epoch = epoch
            self.states[member].model.train()
        epoch_start = time.perf_counter()
        streams = {member: iterate_batches(self.data.train, train.batch_size, shuffle=True,
                                           generator=self.states[member].generators["shuffle"]) for member in live}
        for index in itertools.count():
            if train.max_steps_per_epoch is not None and index >= train.max_steps_per_epoch:
                break
            batches = {member: next(streams[member], None) for member in self.live}
            if not batches or any(batch is None for batch in batches.values()):
                break  # members share the training set, so their epochs end together
            self.step(batches)
            bar.update(1)
            step = self.states[self.live[0]].step if self.live else None
            if step is not None and train.val_every is not None and step % train.val_every == 0:
                self.validate(self.live)
        live = self.live
        self.validate([member for member in live if self.states[member].last_validated != self.states[member].step])
        elapsed = time.perf_counter() - epoch_start
        self.measure_gates(live)
        for member in live:
            state = self.states[member]
            state.train_time += elapsed
            state.epochs_done = epoch + 1
            with self.isolated(member):
                for callback in state.callbacks:
                    callback.on_epoch_end(state)
        if live:
            bar.line(f"epoch {epoch + 1}/{train.epochs}, step {self.states[live[0]].step}, "
                     f"{len(self.live)} of {len(self.states)} runs training")

    def step(self, batches: dict[int, tuple[Tensor, Tensor]]) -> None:
        """One training step of every live member; frozen (finished) members get a stand-in batch."""
        filler = next(iter(batches.values()))
        x = torch.stack([batches.get(member, filler)[0] for member in range(len(self.states))])
        y = torch.stack([batches.get(member, filler)[1] for member in range(len(self.states))])
        state0 = self.states[next(iter(batches))]
        result = self.trainer.step(x, y, step=state0.step, epoch=state0.epoch)
        scored = self.scored
        counts = torch.stack([torch.stack(batch_correct(result.logits[member], batches[member][1], scored))
                              for member in batches]).tolist()
        for (member, batch), (hits, counted) in zip(batches.items(), counts):
            state = self.states[member]
            state.batch = batch
            state.step += 1
            values = {"loss": result.loss[member]}
            if scored is not None:
                values["accuracy"] = hits / counted if counted else float("nan")
            values.update(grad_norm=result.grad_norm[member], lr=state.optimiser.param_groups[0]["lr"])
            with self.isolated(member):
                for callback in state.callbacks:
                    values.update(callback.extra_values(state))
                for callback in state.callbacks:
                    callback.on_train_batch(state, values)
                if state.diverged_step is None:
                    for callback in state.callbacks:
                        callback.on_step_end(state)
            if state.diverged_step is not None and member not in self.errors:
                self.finish(member)

    def validate(self, members: list[int]) -> None:
        """Validate ``members`` on the whole validation split and tell their callbacks.

        All members at once (:func:`evaluate_members`) while at least half of
        them are asked for: on a GPU tiny kernels are launch-bound, and on the
        CPU a 10-seed ensemble of the benchmark sweep validated in 2.1-2.5
        CPU-s (LSTM), 2.1 (GRU) and 1.0 (tanh) against 3.3-3.7, 3.3 and 1.4
        member by member. With most members ended, each of the rest alone.
        """
        if not members:
            return
        train, data = self.train, self.data
        options = dict(batch_size=train.batch_size, class_names=data.class_names, max_batches=train.max_eval_batches)
        if self.states[0].device.type == "cuda" or 2 * len(members) >= len(self.states):
            scores = evaluate_members(self.ensemble, data.validation, data.task, **options)
        else:
            scores = {member: evaluate(self.states[member].model, data.validation, data.task, **options)
                      for member in members}
        self.measure_gates([member for member in members if self.states[member].step == 0])  # diagnosed at step 0
        for member in members:
            state = self.states[member]
            state.last_validated = state.step
            with self.isolated(member):
                for callback in state.callbacks:
                    callback.on_validation(state, *scores[member])

    def measure_gates(self, members: list[int]) -> None:
        """Measure the gates of ``members`` all at once, for their :class:`Diagnostics` to take.

        On the CPU the 5 members of an FSDD LSTM ensemble measured their 16-sample probe in 15 ms at once
        against 33 ms one by one (GRU 10 against 28, tanh RNN 4 against 12), after every epoch. Where fewer
        than two members would take them, each measures its own.
        """
        wanting = [member for member in members
                   if any(isinstance(callback, Diagnostics) for callback in self.states[member].callbacks)]
        if len(wanting) < 2:
            return
        measured = member_gate_columns(self.ensemble, self.data.validation.x[: self.train.diagnostics_batch])
        for member in wanting:
            state = self.states[member]
            state.premeasured[("gates", state.step)] = measured[member]

    def finish(self, member: int) -> None:
        """End member ``member`` (after its last epoch, or at its divergence) and write its folder."""
        state = self.states[member]
        with self.isolated(member):
            for callback in state.callbacks:
                callback.on_fit_end(state)
            self.results[member] = finish_run(state)
