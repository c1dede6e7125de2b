"""The bad-input matrix as data: its cases (``cases``), what a target must do with one and how an
answer falls short (``expectations``), and how each is encoded per target (``bodies``). ``tests/integration/bad_input`` sends them to the real servers and the CLI;
``docsgen.reliability`` tabulates them in docs/reliability.md."""
