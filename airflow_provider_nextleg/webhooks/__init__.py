"""Completion by webhook: NextLeg POSTs a finished job's result to a receiver, which hands it to the
trigger waiting for it through an inbox.

One module per layer, each imported on its own (this package imports nothing):

- :mod:`.tokens`: a job's key and its token, the receiver's URL for the job (standard library only).
- :mod:`.config`: a nextleg connection's ``webhook_url``, ``webhook_secret`` and inbox.
- :mod:`.inbox`: where the receiver stores results and triggers wait for them (a local directory or Redis).
- :mod:`.receiver`: the receiver, a FastAPI app; :mod:`.plugin` serves it in Airflow's API server,
  :mod:`.cli` on its own (``nextleg-webhook-receiver``).
"""
