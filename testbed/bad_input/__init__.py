"""The bad-input matrix as data: its cases (``cases``) and how each is encoded per target
(``bodies``). ``tests/integration/bad_input`` sends them to the real servers and the CLI;
``docsgen.reliability`` tabulates them in docs/reliability.md."""
