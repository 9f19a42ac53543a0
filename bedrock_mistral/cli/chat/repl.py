"""The chat loop: read a line, run a /command or send a turn, show the reply, save.

State lives in one :class:`Repl`: the :class:`~bedrock_mistral.cli.sessions.Session`
(transcript, model, backend, system prompt, parameters), the prompt of a failed turn, and
a pool of clients, one per backend and model, so ``/backend`` and ``/model`` switch without
losing history and switching back does not reload the local model. Only the Repl's verbs
(:meth:`Repl.send`, :meth:`Repl.set_param`, :meth:`Repl.switch_model`, ...) change that
state; the /commands in :mod:`.commands` parse their argument and call one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from bedrock_mistral.cli.chat.loading import ClientPool, LoadCancelled
from bedrock_mistral.cli.config import Settings
from bedrock_mistral.cli.exits import describe
from bedrock_mistral.cli.reply import footer, ignore_sigint, quiet_tty, reply_meta
from bedrock_mistral.errors import BedrockMistralError, StreamInterrupted, ValidationError

if TYPE_CHECKING:
    from pathlib import Path

    from bedrock_mistral.cli.env import Env
    from bedrock_mistral.cli.line_input import LineReader
    from bedrock_mistral.cli.render import ReplyView
    from bedrock_mistral.cli.sessions import Session, SessionStore
    from bedrock_mistral.client import MistralClient
    from bedrock_mistral.models import ModelSpec
    from bedrock_mistral.types import GenerationParams

__all__ = ["Repl"]


def _explain(err: BaseException) -> str:
    """The error's one line, its fix worded for the chat (``/backend local``, not a flag)."""
    return describe(err, "chat")[1]


def _effective_params(spec: ModelSpec, params: dict[str, Any]) -> GenerationParams:
    """The parameters with the model's defaults filled in; raises if the model refuses them."""
    from bedrock_mistral.validation import resolve_params

    return resolve_params(spec, params)


@contextlib.contextmanager
def _trims_shown_as_notes() -> Iterator[None]:
    """The chat shows each trim as a note; without --debug (which configures logging),
    Python's last-resort handler would print the Conversation's log warning as well."""
    logger = logging.getLogger("bedrock_mistral.conversation")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


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
        self.settings = settings
        self.reader = reader
        self.plain = plain
        self._session = session
        self._resumed = resumed
        self._pending: str | None = None  # a prompt whose reply failed; /retry sends it again
        self._running = True
        self._clients = ClientPool(self._build_client, waiting=self._waiting)

    @property
    def session(self) -> Session:
        """The conversation in use (read it; change it through the verbs)."""
        return self._session

    @property
    def running(self) -> bool:
        return self._running

    # --- the loop ---

    def run(self) -> None:
        self.banner()
        try:
            with _trims_shown_as_notes():
                while self._running:
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
                from bedrock_mistral.cli.chat.commands import run_command

                run_command(self, stripped)
            else:
                self.send(text.lstrip()[1:] if stripped.startswith("//") else text)
        except LoadCancelled as err:
            self.env.note(f"{err}; it goes on loading in the background")
        except KeyboardInterrupt:
            self.env.note("interrupted")
        except (BedrockMistralError, OSError) as err:
            self.env.error(_explain(err))

    def banner(self) -> None:
        session = self._session
        state = f"resumed, {session.turns} turns" if self._resumed else "new"
        self.env.note(
            f"{session.model} on {session.backend} · session {session.name} ({state})", style="bold"
        )
        self.env.note('Enter sends · Esc-Enter or """ for new lines · /help · Ctrl-D quits')

    def close(self) -> None:
        self._clients.close()
        if self._session.messages and self.store.exists(self._session.name):
            self.env.note(f"session {self._session.name} saved (resume: bedrock-mistral chat -c)")

    # --- clients ---

    def client(self) -> MistralClient:
        """The client for the session's backend and model, loaded on first use.

        Raises :class:`~.loading.LoadCancelled` when Ctrl-C stops the wait.
        """
        return self._clients.get((self._session.backend, self._session.model))

    def _build_client(self, key: tuple[str, str]) -> MistralClient:
        from bedrock_mistral.cli.clients import make_client

        return make_client(self.settings.replace(backend=key[0], model=key[1]))

    def _waiting(self, key: tuple[str, str]) -> AbstractContextManager[object]:
        if key[0] == "local":
            return self.env.err.status("loading the local model… (Ctrl-C stops waiting)")
        return contextlib.nullcontext()

    # --- turns ---

    def send(self, text: str) -> None:
        """Send a message; on success the turn is added to the session and saved."""
        from bedrock_mistral.cli.chat.turn import answer, dropped_note

        self._pending = None
        try:
            client = self.client()
            with quiet_tty(self.env.stdin):
                result = answer(client, self._session, text, self._view)
        except LoadCancelled as err:
            self._pending = text
            self.env.note(
                f"{err}; it goes on loading in the background (/retry sends your message again)"
            )
            return
        except StreamInterrupted as err:
            self._keep_partial(err, text)
            return
        except BedrockMistralError as err:
            self._fail(text, _explain(err))
            return
        except KeyboardInterrupt:
            self._fail(text, "interrupted")
            return
        reply = result.reply
        if reply.cut and not reply.text:
            self._fail(text, "cut before any text arrived")
            return
        if result.dropped:
            self._session.leave_out(result.dropped)
            self.env.note(dropped_note(result.dropped, window=client.counter.context_window))
        self._session.add_user(text)
        self._session.add_assistant(reply.text, meta=reply_meta(reply), cut=reply.cut)
        self.save()
        self.env.note(footer(reply) + "\n")  # a blank line before the next prompt

    def _view(self) -> ReplyView:
        from bedrock_mistral.cli.render import make_view

        return make_view(self.env, plain=self.plain)

    def _fail(self, prompt: str, why: str) -> None:
        self._pending = prompt
        self.env.error(f"{why} (/retry sends it again)")

    def _keep_partial(self, err: StreamInterrupted, prompt: str) -> None:
        if not err.partial_text:
            self._fail(prompt, _explain(err))
            return
        meta = {"model": self._session.model, "backend": self._session.backend, "error": str(err)}
        self._session.add_user(prompt)
        self._session.add_assistant(err.partial_text, meta=meta, cut=True)
        self.save()
        self.env.error(f"{_explain(err)} (the partial reply is kept; /retry asks again)")

    def retry(self) -> None:
        """Regenerate the last reply, or resend a prompt whose reply failed."""
        if self._session.messages and self._session.messages[-1]["role"] == "assistant":
            prompt = self._session.pop_turn()
            if prompt is not None:
                self.send(prompt)
                return
        if self._pending is not None:
            self.send(self._pending)
            return
        self.env.note("nothing to retry yet")

    # --- settings ---

    def set_system(self, text: str | None) -> None:
        """Set (or with None clear) the system prompt; it applies from the next turn."""
        self._session.system = text
        self._save_if_started()

    def set_param(self, key: str, value: Any | None) -> Any:
        """Set one generation parameter (None: back to the model default); returns the value
        in effect. Raises, changing nothing, when the model refuses it."""
        params = dict(self._session.params)
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
        _effective_params(self._spec(self._session.model), params)
        self._session.params = params
        self._save_if_started()
        return params.get(key)

    def effective_params(self) -> GenerationParams:
        """The session's parameters with the model's defaults filled in."""
        return _effective_params(self._spec(self._session.model), self._session.params)

    def switch_model(self, name: str) -> ModelSpec:
        """Continue the conversation with another model (raises for an unknown one)."""
        spec = self._spec(name)
        self._session.model = name
        return spec

    def _spec(self, name: str) -> ModelSpec:
        """The model's facts: the registry's, or for an engine its client's (an engine's
        own model names are not in the registry)."""
        from bedrock_mistral.backends.openai_presets import is_engine_backend
        from bedrock_mistral.models import resolve_model

        if is_engine_backend(self._session.backend):
            return self._clients.get((self._session.backend, name)).model
        return resolve_model(name)

    def switch_backend(self, backend: str) -> None:
        """Continue on another backend, once its client has loaded (nothing changes if not)."""
        self._clients.get((backend, self._session.model))
        self._session.backend = backend

    # --- sessions ---

    def new_conversation(self) -> Session:
        """Start a new session with the same settings; the old one stays saved. Returns it."""
        old = self._session
        self._session = self.store.create(
            model=old.model, backend=old.backend, system=old.system, params=dict(old.params)
        )
        self._pending = None
        return old

    def save_as(self, name: str | None = None) -> Path:
        """Save now, under ``name`` when given (an automatic ``chat-...`` name is renamed)."""
        from bedrock_mistral.cli.sessions import check_name

        old = self._session.name
        if name and name != old:
            name = check_name(name)
            if self.store.exists(name):
                raise ValidationError(
                    f"session {name} already exists: /load {name}, or pick another name",
                    field="session name",
                    value=name,
                )
            self._session.name = name
        path = self.store.save(self._session)
        if name and name != old and old.startswith("chat-") and self.store.exists(old):
            self.store.delete(old)  # an automatic name was only a placeholder: rename, not copy
        return path

    def load_session(self, name: str) -> Session:
        """Switch to the saved session ``name``."""
        self._session = self.store.load(name)
        self._pending = None
        return self._session

    def save(self) -> None:
        """Write the session now; Ctrl-C cannot interrupt the write."""
        try:
            with ignore_sigint():
                self.store.save(self._session)
        except OSError as err:
            self.env.error(f"could not save session {self._session.name}: {err.strerror or err}")

    def _save_if_started(self) -> None:
        if self._session.messages:
            self.save()

    def quit(self) -> None:
        self._running = False
