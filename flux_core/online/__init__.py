"""What online algorithms (GRPO, PPO) share: rewards and where completions come from.

- :mod:`~flux_core.online.rewards`, :mod:`~flux_core.online.builtin_rewards`: the reward
  registry's configured functions and Flux's built-in rewards (a reward model among them).
- :mod:`~flux_core.online.rollout`: the :class:`~flux_core.online.rollout.RolloutBackend`
  seam and the local backend; :mod:`~flux_core.online.sglang` speaks SGLang's HTTP API to
  one server or several (:mod:`~flux_core.online.server_pool`: balancing, dead servers dropped);
  :mod:`~flux_core.online.async_rollout` overlaps generation with training;
  :mod:`~flux_core.online.serve` is ``flux serve`` (what it accepts:
  :mod:`~flux_core.online.serve_requests`; weight updates: :mod:`~flux_core.online.serve_weights`).

Importing this package is cheap: torch loads only when a rollout or a reward model runs.
"""
