"""`gpow status` explains every verdict reason it can show (node/roles/verdicts.py is the vocabulary)."""

from __future__ import annotations

from node.app.status import REASON_HELP
from node.roles import verdicts as R


def test_every_reason_has_an_explanation():
    vocabulary = {v for k, v in vars(R).items() if k.isupper() and isinstance(v, str)}
    assert vocabulary, "no reason constants found"
    assert vocabulary - set(REASON_HELP) == set(), "reasons gpow status cannot explain"
