"""Placement filters: the ``compute_driver.scheduler.filters`` namespace.

One module per filter; the entry-point name is the filter's ``name`` and
the word operators write in ``[scheduler] enabled_filters``.
"""
