"""Events, the state store, rule proposals (the observability half of issue 6).

    types.py        the event contract producers record (NetworkEvent, HttpEvent, ...)
    ocsf.py         event -> OCSF 1.7.0 object (sans-IO)
    shorthand.py    OCSF object -> the one-line form `stockade logs` prints (sans-IO)
    schema.py       the SQLite schema and its migrations
    store.py        Store: runs, events, policy revisions, proposals, inference routes, retention
    recorder.py     StoreRecorder: record() enqueues; one writer thread batches into the store
    aggregator.py   L4 policy denials grouped by (host, port, binary) (sans-IO)
    mapper.py       denial summaries -> one narrow proposal per host:port (sans-IO)
    live_policy.py  LivePolicy: hot reload and approvals, as control-socket handlers
    views.py        what `logs`, `list` and `rules` show

The control socket itself is stockade/control.py.
"""
