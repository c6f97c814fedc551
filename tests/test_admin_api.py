"""The admin listener's access rules: loopback needs no token; any other address needs admin.token_file,
refuses to start without it, and then wants ``Authorization: Bearer <token>`` on all but the probes."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.conftest import LbdFactory
from tests.lbdproc import application_config, free_port, http_request, wait_for


def public_admin(proc_config: Path, port: int, token_file: Path | None) -> None:
    config = yaml.safe_load(proc_config.read_text())
    config["admin"] = {"listen": f"0.0.0.0:{port}"}
    if token_file is not None:
        config["admin"]["token_file"] = str(token_file)
    proc_config.write_text(yaml.safe_dump(config))


async def test_public_admin_without_a_token_refuses_to_start(lbd: LbdFactory) -> None:
    proc = lbd(application_config(free_port(), [free_port()]), start=False)
    public_admin(proc.config_path, proc.admin_port, None)
    proc.start()
    assert await proc.wait_exit() == 2
    assert "admin.token_file" in proc.log


async def test_public_admin_wants_the_bearer_token(lbd: LbdFactory, tmp_path: Path) -> None:
    token = tmp_path / "admin.token"
    token.write_text("s3cret-token\n")
    proc = lbd(application_config(free_port(), [free_port()]), start=False)
    public_admin(proc.config_path, proc.admin_port, token)
    proc.start()

    async def ready() -> bool:
        try:
            status, _, _ = await http_request(proc.admin_port, "GET", "/readyz")
        except OSError:
            return False
        return status == 200

    await wait_for(ready, what="ready")  # probes stay open for orchestrators
    status, _, _ = await http_request(proc.admin_port, "GET", "/v1/target-groups")
    assert status == 401
    status, _, _ = await http_request(
        proc.admin_port, "GET", "/v1/target-groups", headers={"Authorization": "Bearer wrong"}
    )
    assert status == 401
    status, _, body = await http_request(
        proc.admin_port, "GET", "/v1/target-groups", headers={"Authorization": "Bearer s3cret-token"}
    )
    assert status == 200 and b'"web"' in body
