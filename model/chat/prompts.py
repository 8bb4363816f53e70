"""Prompt templates as data, and the media messages of the original demo.

Three templates:

- ``vicuna``: Vicuna v0 (SINGLE style): ``{system}###Human: {msg}###Assistant: {msg}###...``;
  the pending assistant turn renders as ``Assistant:``.
- ``llama2``: LLaMA-2 chat (LLAMA_2 style): ``[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{msg} [/INST]``
  then `` {answer} </s><s>[INST] {msg} [/INST]`` per further turn; the leading ``<s>`` is
  left to the tokenizer's BOS.
- ``tokenizer``: the tokenizer's own chat template (the bundled SmolLM2 model).

Every rule of a template lives on ``Template`` (how it renders, whether the tokenizer adds
a start token, where an answer ends, which plain-text markers user text may not spell);
``model/chat/builder.py`` is the one place that turns a conversation into token ids with them,
for training and for the chat engine alike.

Media is written into the user message as ``<ImageHere>`` slots; the builder splits the
rendered prompt on the slot string (it is never tokenized) and splices media embeddings in
between, as the original does. The message strings below are the original demo's, byte for
byte, including the runs of spaces of the audio+video message (they come from a
backslash-continued string literal there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IMAGE_SLOT = "<ImageHere>"  # placeholder for one block of media embeddings

# System prompts. The LLaMA-2 default is the original's `conv_llava_llama_2.system`; the demo
# overrides it per media type (image -> IMAGE_SYSTEM, video with or without sound -> "").
LLAMA_2_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual "
    "content that the user provides, and assist the user with a variety of tasks using natural language."
)
IMAGE_SYSTEM = (
    "You are able to understand the visual content that the user provides. "
    "Follow the instructions carefully and explain your answers in detail."
)

# Media messages (the first user message of a conversation with media).
IMAGE_MESSAGE = "<Image><ImageHere></Image> "
VIDEO_PREFIX = "<Video><ImageHere></Video> "  # followed by the frame-timestamp message
AUDIO_VIDEO_MESSAGE = (
    "Close your eyes, open your ears and you imagine only based on the sound that: <ImageHere>."
    + " " * 17
    + "Close your ears, open your eyes and you see that <Video><ImageHere></Video>."
    + " " * 18
    + "Now answer my question based on what you have just seen and heard."
)
# Audio without pictures has no message in the original; ours mirrors its audio half.
AUDIO_MESSAGE = (
    "Close your eyes, open your ears and you imagine only based on the sound that: <ImageHere>. "
    "Now answer my question based on what you have just heard."
)


Message = tuple[str, str | None]  # (role, text); text None: the pending answer


@dataclass(frozen=True)
class Template:
    """How a conversation becomes one prompt string, and every rule that goes with it."""

    name: str
    style: str  # "single" (Vicuna v0), "llama_2" or "tokenizer"
    system: str  # default system prompt when no media sets one
    roles: tuple[str, str]  # (user, assistant)
    sep: str = ""
    sep2: str = ""
    stop_strings: tuple[str, ...] = ()  # text that ends an answer (besides the tokenizer's eos)
    # Turn markers written as plain text (not special tokens): user text spelling one would
    # tokenize exactly like a real turn boundary, so ``escape`` breaks it with a space.
    markers: tuple[str, ...] = ()
    slot: str = IMAGE_SLOT  # how a media slot renders in the prompt string (never tokenized)

    @property
    def add_start_token(self) -> bool:
        """Whether the prompt's first text gets the tokenizer's start token (BOS): the original's
        templates rely on it; a chat template writes its own, if any."""
        return self.style != "tokenizer"

    def render(self, system: str, messages: list[Message], tokenizer: Any = None) -> str:
        """Render ``messages`` ((role, text) with roles from ``roles``; a final ``(assistant, None)``
        asks for an answer) into the prompt string the original builds."""
        if self.style == "single":
            return _render_single(self, system, messages)
        if self.style == "llama_2":
            return _render_llama_2(self, system, messages)
        if self.style == "tokenizer":
            return _render_chat_template(self, system, messages, tokenizer)
        raise ValueError(f"template {self.name!r} has unknown style {self.style!r}")

    def answer_suffix(self, tokenizer: Any = None) -> str:
        """Text that ends an answer in a rendered conversation."""
        if self.style == "single":
            return self.sep
        if self.style == "llama_2":
            return f" {self.sep2}"
        return tokenizer.eos_token if tokenizer is not None else ""

    def answer_end(self, rendered: str) -> str:
        """Of the text rendered after a prompt when its answer is filled in, the part the model
        writes (and training supervises): all of it, except that a chat template's newline
        after its end token is not the model's to say."""
        return rendered.rstrip("\n") if self.style == "tokenizer" else rendered

    def escape(self, text: str) -> str:
        """User text with every plain-text turn marker broken by a space (``###`` -> ``# ##``),
        so that it can never spell a turn boundary; text without markers is unchanged."""
        for marker in self.markers:
            while marker in text:  # "####" -> "# ###" -> "# # ##"
                text = text.replace(marker, marker[0] + " " + marker[1:])
        return text


VICUNA_V0 = Template(name="vicuna", style="single", system="", roles=("Human", "Assistant"),
                     sep="###", stop_strings=("###",), markers=("###",))
LLAMA_2 = Template(name="llama2", style="llama_2", system=LLAMA_2_SYSTEM, roles=("USER", "ASSISTANT"),
                   sep="<s>", sep2="</s>", stop_strings=("</s>",),
                   markers=("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"))
TOKENIZER = Template(name="tokenizer", style="tokenizer", system="", roles=("user", "assistant"))

TEMPLATES: dict[str, Template] = {t.name: t for t in (VICUNA_V0, LLAMA_2, TOKENIZER)}


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise KeyError(f"unknown prompt template {name!r}; known: {', '.join(sorted(TEMPLATES))}")
    return TEMPLATES[name]


# -- media messages ------------------------------------------------------------------------
def media_message(kind: str, *, with_audio: bool = False, frame_message: str = "") -> tuple[str, list[str]]:
    """The user message that introduces a media file, and the branch feeding each slot.

    Args:
        kind: "video", "image" or "audio".
        with_audio: for a video, whether its sound is used (the original's audio+video message).
        frame_message: for a video without sound, the "The video contains ... seconds. " text.

    Returns:
        (message, slots): ``slots[i]`` is "video" or "audio" for the i-th ``<ImageHere>``.
    """
    if kind == "image":
        return IMAGE_MESSAGE, ["video"]  # an image goes through the video path with T = 1
    if kind == "audio":
        return AUDIO_MESSAGE, ["audio"]
    if kind != "video":
        raise ValueError(f"unknown media kind {kind!r}; use 'video', 'image' or 'audio'")
    if with_audio:
        return AUDIO_VIDEO_MESSAGE, ["audio", "video"]  # sound first, as in the original
    return VIDEO_PREFIX + frame_message, ["video"]


def media_system(template: Template, kind: str | None) -> str:
    """System prompt the original demo uses for this media kind (None: no media)."""
    if kind is None:
        return template.system
    return IMAGE_SYSTEM if kind == "image" else ""


def join_question(media_msg: str, question: str) -> str:
    """The first question is appended to the media message with one space (`Chat.ask`)."""
    return " ".join([media_msg, question])


# -- rendering (one function per style) ----------------------------------------------------
def _render_single(template: Template, system: str, messages: list[Message]) -> str:
    out = system + template.sep
    for role, text in messages:
        out += f"{role}: {text}{template.sep}" if text else f"{role}:"
    return out


def _render_llama_2(template: Template, system: str, messages: list[Message]) -> str:
    out = ""
    for i, (role, text) in enumerate(messages):
        if i == 0 and role != template.roles[0]:
            raise ValueError("the first message of a LLaMA-2 prompt must come from the user")
        if not text:
            continue  # the pending answer adds nothing
        if i == 0:
            text = f"<<SYS>>\n{system}\n<</SYS>>\n\n{text}"
        if i % 2 == 0:
            out += f"{template.sep}[INST] {text} [/INST]"
        else:
            out += f" {text} {template.sep2}"
    # The original strips the leading separator characters; BOS comes from the tokenizer.
    return out.lstrip(template.sep)


def _render_chat_template(template: Template, system: str, messages: list[Message], tokenizer: Any) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("template 'tokenizer' needs a tokenizer with a chat template; "
                         "set config.llm.template to 'llama2' or 'vicuna' for this model")
    role_names = {template.roles[0]: "user", template.roles[1]: "assistant"}
    chat = [{"role": "system", "content": system}] if system else []
    # An empty answer keeps its (empty) message, so the next turn still extends the rendered text.
    chat += [{"role": role_names[role], "content": text} for role, text in messages if text is not None]
    pending = bool(messages) and messages[-1][1] is None
    return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=pending)


def stop_strings(template: Template, tokenizer: Any = None) -> list[str]:
    """Strings that end an answer: the template's, plus the tokenizer's eos text."""
    stops = list(template.stop_strings)
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos not in stops:
        stops.append(eos)
    return stops


def stop_token_ids(tokenizer: Any, generation_config: Any = None) -> set[int]:
    """Token ids that end an answer, read from the tokenizer and the model's generation config."""
    ids: set[int] = set()
    for source in (getattr(tokenizer, "eos_token_id", None), getattr(generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif source is not None:
            ids.update(int(i) for i in source)
    return ids
