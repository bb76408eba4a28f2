"""
Describe an image, then imagine from the best of the four descriptions Midjourney gives.

``DescribeOperator`` returns the four prompts in its result's ``content`` (each starts with a number
emoji and may end with flags such as ``--ar 3:2``). A plain Python task picks one, here the most
detailed; ``ImagineOperator`` imagines it. The image URL is a param: any public http(s) image.
"""

from __future__ import annotations

import re

from airflow.sdk import DAG, Param, task

from airflow_provider_nextleg.operators.nextleg import DescribeOperator, ImagineOperator

_NUMBERING = re.compile(r"^\s*\d\ufe0f?\u20e3\s*")


def best_description(descriptions: list[str]) -> str:
    """The description with the most distinct words, without its leading number emoji."""
    cleaned = [_NUMBERING.sub("", text).strip() for text in descriptions]
    return max(cleaned, key=lambda text: len(set(text.lower().split())))


with DAG(
    dag_id="nextleg_describe_then_imagine",
    schedule=None,
    params={
        "image_url": Param(
            "https://upload.wikimedia.org/wikipedia/commons/3/3f/Placeholder_view_vector.svg.png",
            type="string",
            pattern="^https?://",
            description="A public image to describe.",
        )
    },
    tags=["nextleg", "example"],
    doc_md=__doc__,
) as dag:
    describe = DescribeOperator(task_id="describe", url="{{ params.image_url }}")

    @task
    def pick_description(result: dict) -> str:
        """Choose the prompt to imagine from the describe result."""
        return best_description(result["content"])

    imagine = ImagineOperator(task_id="imagine", prompt=pick_description(describe.output))
