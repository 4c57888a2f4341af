"""The four answers that open ``findings.md``, in the coursework's order, each led by its figure.

1. What vanishing gradients are, why they occur, and which activations suffer more or less
   (:mod:`.vanishing`).
2. Why LSTMs help compared with a vanilla RNN (:mod:`.lstm`).
3. Which of three training curves is the RNN, the LSTM and the GRU, and why (:mod:`.curves`).
4. When to use each (:mod:`.choice`).

Every number is computed from the runs (:mod:`gradlab.analysis.report.study`
finds them by configuration). On FSDD the unit of every headline interval is
the test speaker: each fold's mean over its seeds is one observation, and a
difference is a paired t test over folds (:mod:`gradlab.analysis.folds`); the
distance task has one fixed data set, so its unit is the seed. A sentence whose
data is missing is left out, and an answer with no data says so.
"""

from __future__ import annotations

from collections.abc import Sequence

from gradlab.analysis.report.answers.choice import answer_choice, differences
from gradlab.analysis.report.answers.common import FIGURES, QUESTIONS
from gradlab.analysis.report.answers.curves import answer_curves
from gradlab.analysis.report.answers.figures import answer_figures
from gradlab.analysis.report.answers.lstm import answer_lstm
from gradlab.analysis.report.answers.vanishing import answer_vanishing, decay_table
from gradlab.analysis.report.study import Study

__all__ = ["FIGURES", "QUESTIONS", "answer_choice", "answer_curves", "answer_figures", "answer_lstm",
           "answer_vanishing", "answers", "decay_table", "differences"]


def answers(study: Study, figures: Sequence[str] = ()) -> list[str]:
    """``## Answers``: the four questions, each heading stating its question, each led by its figure."""
    lines = ["## Answers", ""]
    builders = (answer_vanishing, answer_lstm, answer_curves, answer_choice)
    for index, (question, build) in enumerate(zip(QUESTIONS, builders), start=1):
        lines += [f"### {index}. {question}", "", *build(study, figures)]
    return lines
