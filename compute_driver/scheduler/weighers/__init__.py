"""Placement weighers: the ``compute_driver.scheduler.weighers`` namespace.

One module per weigher; the entry-point name is the weigher's ``name`` and
the word operators write in ``[scheduler] weighers``.
"""
