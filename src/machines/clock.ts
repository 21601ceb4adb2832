/**
 * The time the machines record (a job's start and end, a model's last use, a keep-alive's end, an error's
 * time): read from the clock of the actor system, the one `createActor(machine, { clock })` was given and
 * every spawned runtime shares. XState's `SimulatedClock` tells its time (`now()`), so a test that passes one
 * controls every timestamp, as it already controls every timer; the default clock only schedules, so the
 * daemon reads the wall clock. (`system._clock` is part of XState's typed `ActorSystem`; there is no other
 * way for an action to reach the clock.)
 */
export function now(system: { _clock: object }): number {
  const clock = system._clock as { now?: () => unknown };
  return typeof clock.now === "function" ? Number(clock.now()) : Date.now();
}
