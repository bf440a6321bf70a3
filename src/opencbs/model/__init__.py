"""Values shared by the server and the agent, each defined once and parsed once at the edge
(style.md §16, §17): a backup set's settings (``model.sets``) and the job record
(``model.jobs``). Uses nothing of ours but ``reports`` and ``errors``."""
