"""Values shared by the server and the agent, each defined once and parsed once at the edge
(style.md §16, §17): a backup set's settings (``model.sets``), the job record
(``model.jobs``) and the text rule of what is stored and served as JSON text (``model.text``).
Uses nothing of ours but ``reports`` and ``errors``."""
