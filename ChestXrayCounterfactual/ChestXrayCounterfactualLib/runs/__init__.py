"""The front ends that explain many files: a list of files (:mod:`.files`), a whole archive, resumable
(:mod:`.archive`, with its index :mod:`.index` and its Ray actors :mod:`.ray_actors`), and the command line
(:mod:`.cli`). The top layer: nothing else in the engine imports it.
"""
