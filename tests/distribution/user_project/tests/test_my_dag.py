"""A user's own DAG test: dag.test() against the provider's emulator, with nothing set up by hand."""

from __future__ import annotations

from airflow.sdk import DAG  # Airflow imported while pytest collects, as most test modules do


def test_the_chain_succeeds(nextleg_airflow_home, nextleg_emulator):
    dag = nextleg_airflow_home.get_dag("my_nextleg_chain")
    assert isinstance(dag, DAG)
    run = dag.test()
    assert run.state == "success"
    assert [entry["endpoint"] for entry in nextleg_emulator.ledger()] == ["/v2/imagine", "/v2/button"]
    assert not nextleg_emulator.duplicate_submissions()


def test_a_second_run_in_the_same_home(nextleg_airflow_home, nextleg_emulator):
    assert nextleg_airflow_home.get_dag("my_nextleg_chain").test().state == "success"
