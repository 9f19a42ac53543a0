"""The chat loop: read a line, run a /command or send a turn, show the reply, save.

State lives in one :class:`Repl`: the :class:`~bedrock_mistral.cli.sessions.Session`
(conversation, model, backend, system prompt, parameters) and a cache of clients, one
per backend and model, so ``/backend`` and ``/model`` switch without losing history and
switching back does not reload the local model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bedrock_mistral.cli.config import Settings
from bedrock_mistral.cli.exits import describe
from bedrock_mistral.cli.reply import footer, ignore_sigint, quiet_tty, reply_meta, stream_reply
from bedrock_mistral.errors import BedrockMistralError, StreamInterrupted

if TYPE_CHECKING:
    from bedrock_mistral.cli.env import Env
    from bedrock_mistral.cli.line_input import LineReader
    from bedrock_mistral.cli.sessions import Session, SessionStore
    from bedrock_mistral.client import MistralClient

__all__ = ["Repl"]


def _explain(err: BaseException) -> str:
    """The error's one line, with command-line fixes turned into their /command form."""
    return describe(err)[1].replace("--backend local", "/backend local")


class Repl:
    """One interactive chat."""

    def __init__(
        self,
        env: Env,
        *,
        store: SessionStore,
        session: Session,
        settings: Settings,
        reader: LineReader,
        plain: bool = False,
        resumed: bool = False,
    ) -> None:
        self.env = env
        self.store = store
        self.session = session
        self.settings = settings
        self.reader = reader
        self.plain = plain
        self.resumed = resumed
        self.pending: str | None = None  # a prompt whose reply failed; /retry sends it again
        self.running = True
        self._clients: dict[tuple[str, str], MistralClient] = {}

    # --- the loop ---

    def run(self) -> None:
        self.banner()
        try:
            while self.running:
                text = self.reader.read()
                if text is None:
                    break
                self.handle(text)
        finally:
            self.close()

    def handle(self, text: str) -> None:
        """One line of input: a /command, or a message (``//`` sends a leading slash)."""
        stripped = text.strip()
        if not stripped:
            return
        try:
            if stripped.startswith("/") and not stripped.startswith("//"):
                from bedrock_mistral.cli.slash import run_command

                run_command(self, stripped)
            else:
                self.send(text.lstrip()[1:] if stripped.startswith("//") else text)
        except KeyboardInterrupt:
            self.env.note("interrupted")
        except (BedrockMistralError, OSError) as err:
            self.env.error(_explain(err))

    def banner(self) -> None:
        session = self.session
        state = f"resumed, {session.turns} turns" if self.resumed else "new"
        self.env.note(
            f"{session.model} on {session.backend} · session {session.name} ({state})", style="bold"
        )
        self.env.note('Enter sends · Esc-Enter or """ for new lines · /help · Ctrl-D quits')

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        if self.session.messages and self.store.exists(self.session.name):
            self.env.note(f"session {self.session.name} saved (resume: bedrock-mistral chat -c)")

    # --- clients ---

    def client(self) -> MistralClient:
        """The client for the session's current backend and model, built on first use."""
        key = (self.session.backend, self.session.model)
        client = self._clients.get(key)
        if client is None:
            from bedrock_mistral.cli.clients import make_client

            settings = self.settings.replace(backend=key[0], model=key[1])
            if key[0] == "local":
                with self.env.err.status("loading the local model…"):
                    client = make_client(settings)
            else:
                client = make_client(settings)
            self._clients[key] = client
        return client

    # --- turns ---

    def send(self, text: str) -> None:
        self.pending = None
        self.session.add_user(text)
        self.reply()

    def reply(self) -> None:
        """Answer the user turn at the end of the conversation, then save the session."""
        prompt = str(self.session.messages[-1]["content"])
        try:
            client = self.client()
            with quiet_tty(self.env.stdin):
                reply = stream_reply(
                    client,
                    self.session.conversation(),
                    self.session.params,
                    self._view(),
                )
        except StreamInterrupted as err:
            self._keep_partial(err, prompt)
            return
        except BedrockMistralError as err:
            self._drop_turn(prompt, _explain(err))
            return
        except KeyboardInterrupt:
            self._drop_turn(prompt, "interrupted")
            return
        if reply.cut and not reply.text:
            self._drop_turn(prompt, "cut before any text arrived")
            return
        self.session.add_assistant(reply.text, meta=reply_meta(reply), cut=reply.cut)
        self.save()
        self.env.note(footer(reply) + "\n")  # a blank line before the next prompt

    def _view(self) -> Any:
        from bedrock_mistral.cli.render import make_view

        return make_view(self.env, plain=self.plain)

    def _drop_turn(self, prompt: str, why: str) -> None:
        self.session.pop_turn()
        self.pending = prompt
        self.env.error(f"{why} (/retry sends it again)")

    def _keep_partial(self, err: StreamInterrupted, prompt: str) -> None:
        if not err.partial_text:
            self._drop_turn(prompt, _explain(err))
            return
        meta = {"model": self.session.model, "backend": self.session.backend, "error": str(err)}
        self.session.add_assistant(err.partial_text, meta=meta, cut=True)
        self.save()
        self.env.error(f"{_explain(err)} (the partial reply is kept; /retry asks again)")

    def retry(self) -> None:
        """Regenerate the last reply, or resend a prompt whose reply failed."""
        if self.session.messages and self.session.messages[-1]["role"] == "assistant":
            prompt = self.session.pop_turn()
            if prompt is not None:
                self.send(prompt)
                return
        if self.pending is not None:
            self.send(self.pending)
            return
        self.env.note("nothing to retry yet")

    def save(self) -> None:
        """Write the session now; Ctrl-C cannot interrupt the write."""
        try:
            with ignore_sigint():
                self.store.save(self.session)
        except OSError as err:
            self.env.error(f"could not save session {self.session.name}: {err.strerror or err}")

    def set_params(self, params: dict[str, Any]) -> None:
        self.session.params = params
        if self.session.messages:
            self.save()
