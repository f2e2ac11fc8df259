"""The search service on Ray Serve (`c3dhash serve`; docs/serve.md).

    from c3dhash.cluster.serve.engine import SearchEngine     # in process: == `c3dhash search`
    from c3dhash.cluster.serve.app import ServeConfig, start  # over HTTP: start(ServeConfig(index=...)).url

engine.py (parsing and search, no Serve), uploads.py (what an upload must be), deployments.py (the index
searcher each HTTP replica holds, the video encoder), ingress.py (HTTP routes, token, limits), app.py (config,
application graph, start), page.py/.html.
"""
