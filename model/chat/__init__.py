"""The chat runtime, in the order a turn runs: ``prompts`` (templates as data),
``conversation`` (state and prompt pieces), ``cache`` (media features and KV reuse),
``generate`` (the streaming decode loop), ``turn`` (one turn end to end) and ``engine``
(queue, conversations, models)."""
