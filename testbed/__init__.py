"""What tests and benchmarks share to run the real thing: processes, servers and a Spark cluster on loopback.

Neither ``tests/`` nor ``benchmarks/`` owns these helpers, and ``model/`` must not carry
them (it travels inside the artifact), so they live in a package of their own that both
import: ``testbed.processes``, ``testbed.mlflow_cli``, ``testbed.spark_cluster``.
"""
