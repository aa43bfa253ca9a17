"""Write the env files that the kustomizations' secretGenerators read, from `.env`.

    python3 kompose/secrets_from_env.py [--env-file .env]        (`make k8s-secrets`)

For every `secrets/<secret>.env.example` under kompose/ (base/ and the overlays), write
`secrets/<secret>.env` beside it (git-ignored) with the same keys, each valued from the env
file; the process environment wins over the file, as with `docker compose`. Example value
`<generate>` marks a key internal to the cluster (Airflow's JWT, session and Fernet keys):
taken from the env file when set there (under the key itself or under the name after a colon,
`<generate:AIRFLOW_FERNET_KEY>`, the name Compose reads), else kept from the secrets file
already written, else drawn at random. A key missing from the env file stops the script,
naming it; so does a password that is not URL-safe where it ends up in a connection URL,
and one that readmission/ops/credentials.py refuses (the rules of Compose's credentials check):
a well-known default always; a development value of .env (`...change-me`) or one shorter
than 12 characters unless the env file sets READMISSION_DEV_CREDENTIALS=true (then a warning).

Standard library only: runs with any python3 >= 3.8, without the project's venv.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import os
import re
import secrets
import sys
from pathlib import Path

KOMPOSE = Path(__file__).resolve().parent
GENERATE = "<generate>"
#: Keys whose values are put inside URLs (postgresql+psycopg://user:PASSWORD@..., MC_HOST).
URL_KEYS = {
    "AIRFLOW_DB_PASSWORD",
    "MLFLOW_DB_PASSWORD",
    "MLOPS_DB_PASSWORD",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
}
URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")
_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a Compose-style env file; quotes stripped, ${VAR} expanded."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise SystemExit(f"{path}: cannot read the line {line!r}")
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            quoted, value = value[0], value[1:-1]
        else:
            quoted, value = "", re.sub(r"\s+#.*$", "", value)
        if quoted != "'":
            value = _REFERENCE.sub(lambda m: values.get(m.group(1) or m.group(2), ""), value)
        values[key] = value
    return values


def generated(key: str) -> str:
    """A random value fit for `key` (a Fernet key is 32 url-safe base64-encoded bytes)."""
    if key.endswith("FERNET_KEY"):
        return base64.urlsafe_b64encode(os.urandom(32)).decode()
    return secrets.token_urlsafe(32)


def secret_values(example: Path, source: dict[str, str]) -> dict[str, str]:
    """The values of the secret whose keys `example` lists."""
    target = example.with_suffix("")  # secrets/<secret>.env
    existing = read_env_file(target) if target.is_file() else {}
    values: dict[str, str] = {}
    for key, placeholder in read_env_file(example).items():
        value = source.get(key, "")
        if not value and placeholder.startswith(GENERATE[:-1]):
            alias = placeholder[len(GENERATE) - 1 : -1].lstrip(":")
            value = (alias and source.get(alias, "")) or existing.get(key) or generated(key)
        if not value:
            raise SystemExit(f"{key} (secret {target.stem}) is not set in the env file")
        if "\n" in value:
            raise SystemExit(f"{key}: a secret value cannot span lines")
        if key in URL_KEYS and not URL_SAFE.match(value):
            raise SystemExit(
                f"{key} goes into connection URLs: use only letters, digits and . _ ~ -"
            )
        values[key] = value
    return values


def credentials_rules():
    """readmission/ops/credentials.py, the rules `python -m readmission check-credentials`
    applies in Compose: loaded by path from the checkout (standard library only, so this
    script needs no venv), else from an installed `readmission`."""
    path = KOMPOSE.parent / "readmission" / "credentials.py"
    if path.is_file():
        spec = importlib.util.spec_from_file_location("readmission_credentials", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    try:
        from readmission.ops import credentials
    except ImportError as exc:
        raise SystemExit(f"cannot find readmission/ops/credentials.py next to {KOMPOSE}") from exc
    return credentials


def check_credentials(source: dict[str, str], secrets_values: dict[str, str]) -> None:
    """Refuse well-known passwords always, and development ones unless the env file sets
    READMISSION_DEV_CREDENTIALS=true (then warn): the same rules as Compose."""
    rules = credentials_rules()
    keys = tuple(k for k in rules.SECRET_KEYS if k in secrets_values)
    env = {**source, **secrets_values}
    refused = rules.refused(env, keys)
    for problem in rules.problems(env, keys):
        print(f"{'error' if problem in refused else 'warning'}: {problem}", file=sys.stderr)
    if refused:
        raise SystemExit(
            "refusing to write the Secrets: set real values in the env file (development "
            f"values pass only with {rules.DEV_FLAG}=true)"
        )


def write_secrets(env_file: Path, root: Path = KOMPOSE) -> list[Path]:
    """Write every secrets/*.env under `root` from `env_file`; the paths written."""
    source = {**read_env_file(env_file), **os.environ}
    examples = sorted(root.glob("**/secrets/*.env.example"))
    planned = {example: secret_values(example, source) for example in examples}
    check_credentials(source, {k: v for values in planned.values() for k, v in values.items()})
    written = []
    for example, values in planned.items():
        target = example.with_suffix("")
        target.write_text(
            f"# Written by kompose/secrets_from_env.py from {env_file.name}: never commit.\n"
            + "".join(f"{key}={value}\n" for key, value in values.items()),
            encoding="utf-8",
        )
        target.chmod(0o600)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--env-file",
        type=Path,
        default=KOMPOSE.parent / ".env",
        help="the Compose env file to read (default: .env of the project)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=KOMPOSE,
        help="the kustomization folder (default: this script's)",
    )
    args = parser.parse_args(argv)
    for path in write_secrets(args.env_file, args.root):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
