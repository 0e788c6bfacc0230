#!/usr/bin/env node
/**
 * @module
 * The `switchyard` command line. `switchyard serve` runs the server; `switchyard --help` lists every command.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import {
  CONFIG_ENV,
  loadServerConfig,
  optionChoices,
  optionEnv,
  optionFlag,
  optionFromText,
  SERVER_OPTIONS,
  type OptionSpec,
  type ServerOptionKey,
} from '../config/index.js';
import { isSwitchyardError } from '../errors.js';
import { modelsCommand } from './models.js';
import { tenantsCommand } from './tenants.js';
import { routingCommand } from './routing.js';
import { experimentsCommand } from './experiments.js';
import { featuresCommand } from './features.js';
import { monitorCommand } from './monitor.js';
import { llmCommand } from './llm.js';
import { batchCommand } from './batch.js';
import { migrateCommand } from './migrate.js';
import { auditCommand, whoamiCommand } from './admin.js';
import { VERSION } from '../version.js';

/** The `serve` flag of a table option: typed by the table, help with its env var and default. */
function serveOption(key: ServerOptionKey): Option[] {
  const o = SERVER_OPTIONS[key] as OptionSpec;
  const flag = optionFlag(key);
  const env = optionEnv(key) + (o.envAlso === undefined ? '' : `, or ${o.envAlso}`);
  const shown = o.shown ?? (o.default === '' ? 'none' : typeof o.default === 'boolean' ? (o.default ? 'on' : 'off') : JSON.stringify(o.default));
  const short = o.short === undefined ? '' : `-${o.short}, `;
  if (typeof o.default === 'boolean') {
    if (!o.default) return [new Option(`${short}--${flag}`, `${o.help} [env ${env}=1] (default: ${shown})`)];
    // The positive form is hidden: defined so that --no-<flag> has no default of its own (which would override the env var).
    return [new Option(`--${flag}`, o.help).hideHelp(), new Option(`--no-${flag}`, `turn off: ${o.help} [env ${env}=0] (default: ${shown})`)];
  }
  const opt = new Option(`${short}--${flag} <${o.arg ?? 'value'}>`, `${o.help} [env ${env}] (default: ${shown})`);
  const choices = optionChoices(o);
  if (choices !== undefined) return [opt.choices(choices)];
  if (typeof o.default === 'string') return [opt];
  return [
    opt.argParser((v: string) => {
      const n = optionFromText(o, v);
      if (typeof n === 'number') return n;
      if (o.arg === 'bytes') throw new InvalidArgumentError(`${flag} must be a byte count such as 536870912, 512M or 2G`);
      // An integer option: its default passes the schema, the default plus a half does not.
      const integer = !o.schema.safeParse((o.default as number) + 0.5).success;
      throw new InvalidArgumentError(`${flag} must be ${integer ? 'an integer' : 'a number'}`);
    }),
  ];
}

type ServeFlags = Partial<Record<ServerOptionKey | 'config', unknown>>;

async function serve(flags: ServeFlags): Promise<void> {
  const config = loadServerConfig(flags);
  // The server (onnxruntime, Fastify, database drivers) loads only for `serve`: client commands start fast.
  const { createLogger, createSwitchyard } = await import('../server.js');
  const logger = createLogger(config.logLevel);
  const sy = await createSwitchyard(config, logger);
  const address = await sy.app.listen({ port: config.port, host: config.host });
  const grpcPort = config.grpcPort === 0 ? null : await sy.grpc.listen(config.grpcPort, config.host);
  const models = sy.manager.list().map((m) => `${m.name}[${m.versions.map((v) => `${v.label}:${v.state}`).join(',')}]`);
  logger.info({ address, grpcPort, models }, 'switchyard listening');
  process.stdout.write(
    `Switchyard ${VERSION} listening on ${address}${grpcPort === null ? '' : ` and gRPC ${config.host}:${grpcPort}`} — models: ${models.join(' ') || '(none)'}\n`,
  );
  if (sy.bootstrapKey) {
    process.stdout.write(`Generated platform admin key (shown this once; only its hash is stored):\n  ${sy.bootstrapKey}\n`);
  }
  if (!sy.gateway.authRequired) process.stdout.write('Authentication is off (open developer mode on loopback); start with --auth to require API keys.\n');
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) process.exit(1); // second signal: leave now
    stopping = true;
    logger.info({ signal }, 'shutting down: draining queued requests');
    sy.close().then(
      () => process.exit(0),
      (e: unknown) => {
        logger.error({ err: e }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

const program = new Command('switchyard')
  .description('Switchyard: one service for serving ONNX models over the Open Inference Protocol (KServe/Triton V2).')
  .version(VERSION)
  // Subcommands own the options after their name (`monitor drift m --version 1` is the model version, not ours).
  .enablePositionalOptions()
  .showHelpAfterError();

const serveCommand = program
  .command('serve')
  .description(
    'Serve the registered models (V2 inference, /api/v1 admin, /docs, /metrics); --model-repository imports a directory (DIR/<model>/<version>/model.onnx, optional config.json|yaml) into the registry first.',
  )
  .addOption(
    new Option(
      '-c, --config <file>',
      `a YAML (or JSON) file of options, keys as the flags below without the dashes (load-wait-ms: 1000); flags and environment variables override it [env ${CONFIG_ENV}] (default: none)`,
    ),
  );
for (const key of Object.keys(SERVER_OPTIONS) as ServerOptionKey[]) for (const opt of serveOption(key)) serveCommand.addOption(opt);
serveCommand.action(serve);

program.addCommand(modelsCommand());
program.addCommand(tenantsCommand());
program.addCommand(routingCommand());
program.addCommand(experimentsCommand());
program.addCommand(featuresCommand());
program.addCommand(monitorCommand());
program.addCommand(batchCommand());
program.addCommand(llmCommand());
program.addCommand(migrateCommand());
program.addCommand(auditCommand());
program.addCommand(whoamiCommand());

program.parseAsync(process.argv).catch((e: unknown) => {
  process.stderr.write(`switchyard: ${isSwitchyardError(e) ? e.message : ((e as Error).stack ?? String(e))}\n`);
  process.exit(1);
});
