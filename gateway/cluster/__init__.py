"""Several gateway instances on one Redis (``store: redis://``): the shared log
(:mod:`.log`), one instance's copy of the state (:mod:`.replica`) and the replicated
runtime (:mod:`.runtime`)."""
