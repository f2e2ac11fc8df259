"""Search over packed codes: the flat scan, multi-index hashing, the Searcher that picks one, the sharded index
on Ray, and the CLI's report. Imports kernels/ below it, never metrics/ or index/."""
