// TypeDoc plugin: every documented export needs at least one `@example`, and so does every
// public method of an exported class. A missing one is a validation warning, which
// `treatWarningsAsErrors` (typedoc.json) turns into a failed `npm run docs`.
//
// `requireExampleExcept` (typedoc.json) names reflections let off, by full name ("Town.close");
// a name that no longer needs letting off is itself a warning, so the list cannot go stale.
import { Application, ParameterType, ReflectionKind } from 'typedoc';

/** Top-level kinds that need an example. */
const EXPORT_KINDS =
  ReflectionKind.Class |
  ReflectionKind.Interface |
  ReflectionKind.TypeAlias |
  ReflectionKind.Function |
  ReflectionKind.Variable |
  ReflectionKind.Enum;

/** @param {import('typedoc').Application} app */
export function load(app) {
  app.options.addDeclaration({
    name: 'requireExampleExcept',
    help: 'Full names of reflections that need no @example (tinytown plugin).',
    type: ParameterType.Array,
    defaultValue: [],
  });

  app.on(Application.EVENT_VALIDATE_PROJECT, (project) => {
    const except = new Set(app.options.getValue('requireExampleExcept'));
    const used = new Set();
    const missing = [];
    const check = (reflection) => {
      const name = reflection.getFriendlyFullName();
      if (hasExample(reflection)) return;
      if (except.has(name)) used.add(name);
      else missing.push(`${name} (${ReflectionKind[reflection.kind]})`);
    };
    // With several entry points (tinytown, tinytown/mcp) the exports sit one level down, in modules.
    const exported = (project.children ?? []).flatMap((child) => (child.kindOf(ReflectionKind.Module) ? (child.children ?? []) : [child]));
    for (const reflection of exported) {
      if (!reflection.kindOf(EXPORT_KINDS)) continue;
      check(reflection);
      if (!reflection.kindOf(ReflectionKind.Class)) continue;
      for (const member of reflection.children ?? []) {
        // Inherited members are checked where they are declared.
        if (!member.kindOf(ReflectionKind.Method) || member.inheritedFrom || member.flags.isPrivate || member.flags.isProtected) continue;
        check(member);
      }
    }
    for (const name of missing) app.logger.validationWarning(`${name} has no @example in its TSDoc comment.`);
    const stale = [...except].filter((name) => !used.has(name));
    if (stale.length > 0) app.logger.validationWarning(`requireExampleExcept names reflections that need no letting off: ${stale.join(', ')}`);
  });
}

/** An `@example` on the reflection or on any of its signatures. */
function hasExample(reflection) {
  const comments = [reflection.comment, ...(reflection.signatures ?? []).map((s) => s.comment)];
  return comments.some((comment) => comment?.getTag('@example') !== undefined);
}
