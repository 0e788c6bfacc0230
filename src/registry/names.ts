/**
 * @module
 * The registry's name rules, shared by everything that checks a model or alias name.
 */

/** Model names: also the V2 URL segment and a tenant's namespace prefix (`acme.`). */
export const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** Alias names (`prod`, `canary`). */
export const ALIAS_NAME = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;
