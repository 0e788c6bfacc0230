/**
 * @module
 * `switchyard migrate`: bring the metadata store's schema up to date (or, with `--check`, only report what is
 * pending) without starting a server. The server migrates on start too; this is for running the step on its
 * own before a rollout (deploy/: the migration Job), and for seeing what an upgrade will change.
 */
import { Command, Option } from 'commander';
import { databaseUrl, loadServerConfig, SERVER_DEFAULTS } from '../config/index.js';

interface MigrateFlags {
  database?: string;
  dataDir?: string;
  check?: boolean;
  json?: boolean;
}

/** Print `url` without its password. */
function redact(url: string): string {
  return url.replace(/^(postgres(?:ql)?:\/\/[^:/@]*):[^@]*@/, '$1:***@');
}

async function run(flags: MigrateFlags): Promise<void> {
  const config = loadServerConfig({ database: flags.database, dataDir: flags.dataDir });
  const url = databaseUrl(config);
  // The drivers load only for this command: the other client commands start fast.
  const { openDatabase, migrate, migrationSchema, migrationStatus } = await import('../storage/index.js');
  const database = await openDatabase(url, { migrate: false, timeoutMs: config.databaseTimeoutMs });
  try {
    const schema = migrationSchema(database);
    const before = await migrationStatus(database.db, database.dialect, schema);
    const pending = before.filter((m) => !m.applied).map((m) => m.name);
    const applied = flags.check ? [] : await migrate(database.db, database.dialect, schema);
    const out = { database: redact(url), known: before.length, pending: flags.check ? pending : pending.filter((n) => !applied.includes(n)), applied };
    if (flags.json) process.stdout.write(`${JSON.stringify(out)}\n`);
    else if (flags.check)
      process.stdout.write(
        pending.length === 0
          ? `${out.database}: up to date (${before.length} migrations)\n`
          : `${out.database}: ${pending.length} pending: ${pending.join(', ')}\n`,
      );
    else
      process.stdout.write(
        applied.length === 0
          ? `${out.database}: up to date (${before.length} migrations)\n`
          : `${out.database}: applied ${applied.length}: ${applied.join(', ')}\n`,
      );
    if (flags.check && pending.length > 0) process.exitCode = 2;
  } finally {
    await database.close();
  }
}

/** The `migrate` command. */
export function migrateCommand(): Command {
  return new Command('migrate')
    .description(
      'Apply pending metadata-store migrations (the server also applies them on start; several processes may run this at once: a lock table serializes them). Exit 0 when the schema is up to date afterwards.',
    )
    .addOption(
      new Option(
        '--database <url>',
        'metadata store: sqlite:FILE or postgres://user@host:5432/db[?schema=NAME] [env SWITCHYARD_DATABASE] (default: sqlite:<data-dir>/switchyard.db)',
      ),
    )
    .addOption(new Option('--data-dir <dir>', `data directory, for the default SQLite file [env SWITCHYARD_DATA_DIR] (default: "${SERVER_DEFAULTS.dataDir}")`))
    .addOption(new Option('--check', 'change nothing: list pending migrations and exit 2 when there are any'))
    .addOption(new Option('--json', 'print {database, known, pending, applied} as JSON'))
    .action(run);
}
