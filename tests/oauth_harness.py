"""The real app process in OAuth mode, with two simulated workspaces that install it.

T0001 is the main simulator and T0002 a second workspace that it serves too. Neither is
installed when the stack starts: tests install them through ``OAuthStack.install``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from harness import SIGNING_SECRET, AppProcess, Stack, app_env
from relay_plugin.tools.agent import AGENT, RelayAgent, start_agent
from relay_plugin.tools.simulator import SlackSimulator
from relay_plugin.tools.slack_client import SignedSlackClient
from relay_plugin.tools.slack_oauth import CLIENT_ID, CLIENT_SECRET, InstallResult

STATE_SECRET = "e2e-state-secret-0123456789abcdef"
# Set for the app but never valid: in OAuth mode no call may carry it.
UNUSED_BOT_TOKEN = "xoxb-not-used-in-oauth-mode"
TEAMS = {
    "T0001": {"bot_token": "xoxb-t0001", "bot_user_id": "U0RELAY", "bot_id": "B0RELAY"},
    "T0002": {"bot_token": "xoxb-t0002", "bot_user_id": "U0RELAY2", "bot_id": "B0RELAY2"},
}


def oauth_env(sim: SlackSimulator, data_dir: Path, **overrides: str) -> dict[str, str]:
    """Return the environment of an app process in OAuth mode, wired to the simulator."""
    return app_env(
        sim, data_dir,
        SLACK_BOT_TOKEN=UNUSED_BOT_TOKEN,
        SLACK_CLIENT_ID=CLIENT_ID,
        SLACK_CLIENT_SECRET=CLIENT_SECRET,
        SLACK_STATE_SECRET=STATE_SECRET,
        **overrides,
    )  # fmt: skip


@dataclass
class OAuthStack:
    """The app, the main simulator, the reference agent and one Stack per workspace."""

    sim: SlackSimulator
    app: AppProcess
    agent: RelayAgent
    agent_url: str
    url: str
    teams: dict[str, Stack]

    async def install(self, team: str, *, user: str = "U0001") -> InstallResult:
        """Install the app into ``team`` through /slack/install, as ``user`` in a browser."""
        return await self.sim.oauth.install(self.url, team, user=user)

    async def install_all(self) -> None:
        """Install the app into every workspace; each install must end on the success page."""
        for team in self.teams:
            result = await self.install(team)
            assert result.status == 200, f"install into {team}: {result.status} {result.text}"

    def calls_with_token(self, token: str) -> list[str]:
        """Return the Web API methods called with ``token`` as the bearer token."""
        return [call.method for call in self.sim.calls
                if call.headers.get("Authorization") == f"Bearer {token}"]  # fmt: skip


@asynccontextmanager
async def running_oauth_stack(data_dir: Path, **env: str) -> AsyncIterator[OAuthStack]:
    """Start the simulator with two workspaces, the agent and the app; stop them on exit."""
    first = TEAMS["T0001"]
    sim = SlackSimulator(bot_token=first["bot_token"], bot_user_id=first["bot_user_id"],
                         bot_id=first["bot_id"])  # fmt: skip
    await sim.start()
    runner: web.AppRunner | None = None
    app = AppProcess(oauth_env(sim, data_dir, **env))
    try:
        await sim.oauth.add_workspace("T0002", name="Second Workspace", **TEAMS["T0002"])
        runner, agent_url = await start_agent()
        url = await app.start()
        sim.oauth.redirect_urls = [f"{url}/slack/oauth_redirect"]
        agent = runner.app[AGENT]
        teams = {
            team: Stack(workspace, SignedSlackClient(f"{url}/slack/events", SIGNING_SECRET,
                        workspace), app, agent, agent_url, data_dir)  # fmt: skip
            for team, workspace in sim.oauth.workspaces().items()
        }
        yield OAuthStack(sim, app, agent, agent_url, url, teams)
    finally:
        await app.stop()
        if runner is not None:
            await runner.cleanup()
        await sim.stop()
