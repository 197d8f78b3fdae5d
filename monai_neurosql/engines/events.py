"""Events fired around the quantile assignment step."""

from __future__ import annotations

from ignite.engine import EventEnum

__all__ = ["AssignmentEvents"]


class AssignmentEvents(EventEnum):
    """Fired by :class:`~monai_neurosql.handlers.QuantileAssignmentHandler` on the trainer.

    ``ASSIGNMENT_STARTED`` before the cost matrix is built, ``ASSIGNMENT_COMPLETED`` after the latent bank was
    updated; the statistics of the assignment are then in ``engine.state.assignment`` (a dict with
    ``cost``, ``moved``, ``seconds`` and the split of the time).
    """

    ASSIGNMENT_STARTED = "assignment_started"
    ASSIGNMENT_COMPLETED = "assignment_completed"
