"""Prompt styles of the papers, user templates from YAML, rendering through the chat template.

`{question}` is substituted literally (not with str.format), so LaTeX braces in problems and the
`\\boxed{}` in the prompts are left alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinkfast.config import load_config
from thinkfast.errors import ThinkfastError

# Llama-3 evaluation prompt for MATH (Thinking Slow, Fast, appendix E).
MATH_SYSTEM = (
    "Solve the following math problem efficiently and clearly:\n\n"
    "- For simple problems (2 steps or fewer):\n"
    "Provide a concise solution with minimal explanation.\n\n"
    "- For complex problems (3 steps or more):\n"
    "Use this step-by-step format:\n\n"
    "## Step 1: [Concise description]\n"
    "[Brief explanation and calculations]\n\n"
    "## Step 2: [Concise description]\n"
    "[Brief explanation and calculations]\n\n"
    "...\n\n"
    "Regardless of the approach, always conclude with:\n\n"
    "Therefore, the final answer is: $\\boxed{answer}$. I hope it is correct.\n\n"
    "Where [answer] is just the final number or expression that solves the problem."
)

# GSM8K prompt (Thinking Slow, Fast, appendix E): the system prompt ends with "Problem:", the user turn is the question.
GSM8K_SYSTEM = (
    "Given the following problem, reason and give a final answer to the problem.\n"
    'Your response should end with "The final answer is [answer]" where [answer] is the response to the problem.\n'
    "Problem:"
)

# M1: no system prompt; the instruction follows the problem.
M1_SUFFIX = "Let's think step by step and output the final answer within \\boxed{}"


@dataclass
class PromptTemplate:
    user: str = "{question}"  # must contain {question}
    system: str | None = None

    def validate(self) -> None:
        if "{question}" not in self.user:
            raise ThinkfastError("prompt template 'user' must contain the placeholder {question}")

    def messages(self, question: str) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system}] if self.system else []
        out.append({"role": "user", "content": self.user.replace("{question}", question)})
        return out


STYLES: dict[str, PromptTemplate] = {
    "math": PromptTemplate(system=MATH_SYSTEM),
    "gsm8k": PromptTemplate(system=GSM8K_SYSTEM),
    "m1": PromptTemplate(user="{question} " + M1_SUFFIX),
    "plain": PromptTemplate(),
}


def load_template(style_or_path: str | os.PathLike) -> PromptTemplate:
    """A built-in style name (math, gsm8k, m1, plain) or a YAML file with `system` / `user` keys."""
    if str(style_or_path) in STYLES:
        return STYLES[str(style_or_path)]
    path = Path(style_or_path)
    if not path.is_file():
        raise ThinkfastError(f"prompt style {str(style_or_path)!r} is neither one of {sorted(STYLES)} nor a YAML file")
    template = load_config(PromptTemplate, path)
    template.validate()
    return template


def render_prompt(tokenizer: Any, template: PromptTemplate, question: str, use_chat_template: bool = True) -> str:
    """Prompt text for one question: the chat template with the generation prompt appended."""
    messages = template.messages(question)
    if not use_chat_template:
        return "\n\n".join(m["content"] for m in messages) + "\n\n"
    if not getattr(tokenizer, "chat_template", None):
        raise ThinkfastError(
            "the tokenizer has no chat template; the papers' numbers need one. Set tokenizer.chat_template, "
            "or set use_chat_template: false to evaluate a base model on plain text"
        )
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as err:  # some templates reject a system role: fold it into the user turn
        if messages[0]["role"] != "system":
            raise ThinkfastError(f"chat template failed: {err}") from err
        merged = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
        return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
