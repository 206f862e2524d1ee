"use strict";
// Checks Kubernetes manifests against the schemas of the Kubernetes API and of
// prometheus-operator's CRDs, as the kubernetes-models packages were generated from them, with
// two tools, because neither alone is strict:
//  - each model's validator (ajv code compiled from the OpenAPI schema): types, required
//    fields, enums, formats; it lets unknown fields through (the schemas carry no
//    additionalProperties);
//  - the TypeScript compiler, on each document written as a literal of the model's interface:
//    a field the interface lacks is an error (the excess-property check), as it is for
//    `kubectl apply`, whose field validation is strict by default.
// The pins (package.json): kubernetes-models 4.5.1 (the Kubernetes 1.33 API) and
// @kubernetes-models/prometheus-operator 4.4.4, the newest whose releases run on Debian 12's
// Node.js 18 (their 5.x and 6.x need Node.js 22).
// YAML is read as YAML 1.1 (what Kubernetes' decoder reads: `on` is a boolean) with duplicate
// keys refused.
//
// Usage: NODE_PATH=<node_modules> node validate.js [--parse-only FILE]... FILE...
// (--parse-only: read the file's documents, check no schema: kustomization.yaml is not an API
// object.) Prints one JSON object, {"documents": [{file, index, line, object}], "errors":
// [{file, index, line, path, message, by}]}; exits 0 when there are no errors, 1 when there
// are, 2 when it could not check.
const fs = require("fs");
const os = require("os");
const path = require("path");

const YAML = require("yaml");
const ts = require("typescript");

const NODE_MODULES = path.dirname(path.dirname(require.resolve("kubernetes-models/package.json")));

/// The packages whose models are looked up, by API group ("" is the core group).
function modelCandidates(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string") return [];
  // Names become module paths: nothing but what API groups, versions and kinds are made of.
  if (!/^([a-z0-9.-]+\/)?v[0-9a-z]+$/.test(apiVersion) || !/^[A-Z][A-Za-z0-9]*$/.test(kind)) {
    return [];
  }
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "") return [`kubernetes-models/${version}/${kind}`];
  return [
    `kubernetes-models/${group}/${version}/${kind}`,
    `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`,
  ];
}

function findModel(apiVersion, kind) {
  for (const spec of modelCandidates(apiVersion, kind)) {
    let resolved;
    try {
      resolved = require.resolve(spec);
    } catch {
      continue;
    }
    const Model = require(resolved)[kind];
    if (typeof Model === "function") return { spec, Model, iface: `I${kind}` };
  }
  return null;
}

function main(argv) {
  const files = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--parse-only") {
      if (i + 1 >= argv.length) throw new Error("--parse-only needs a file");
      files.push({ file: argv[++i], schema: false });
    } else {
      files.push({ file: argv[i], schema: true });
    }
  }
  if (files.length === 0) throw new Error("no files given");

  const documents = [];
  const errors = [];
  // What the TypeScript pass needs of each document with a model.
  const typed = [];
  for (const { file, schema } of files) {
    const text = fs.readFileSync(file, "utf8");
    const lineCounter = new YAML.LineCounter();
    const docs = YAML.parseAllDocuments(text, {
      version: "1.1",
      uniqueKeys: true,
      prettyErrors: false,
      lineCounter,
    });
    const lineOf = (offset) => lineCounter.linePos(offset).line;
    docs.forEach((doc, index) => {
      const start = doc.contents ? doc.contents.range[0] : doc.range[0];
      for (const problem of [...doc.errors, ...doc.warnings]) {
        errors.push({
          file,
          index,
          line: lineOf(problem.pos[0]),
          path: "",
          message: problem.message,
          by: "yaml",
        });
      }
      if (doc.errors.length > 0) return;
      // A document of comments only (what `---` before a commented block leaves).
      if (doc.contents === null) return;
      const object = doc.toJS({ maxAliasCount: 0 });
      documents.push({ file, index, line: lineOf(start), object });
      if (!schema) return;
      const where = { file, index, doc, lineOf };
      if (object === null || typeof object !== "object" || Array.isArray(object)) {
        errors.push({ ...locate(where, []), message: "not a mapping", by: "yaml" });
        return;
      }
      const model = findModel(object.apiVersion, object.kind);
      if (model === null) {
        errors.push({
          ...locate(where, []),
          message: `no schema for apiVersion ${JSON.stringify(object.apiVersion)} kind ${JSON.stringify(object.kind)} in kubernetes-models or @kubernetes-models/prometheus-operator`,
          by: "kubernetes-models",
        });
        return;
      }
      try {
        new model.Model(object).validate();
      } catch (e) {
        if (!Array.isArray(e.errors)) throw e;
        for (const err of e.errors) {
          const at = err.instancePath.split("/").slice(1).map(unescapePointer);
          let message = err.message;
          if (err.params && err.params.allowedValues) {
            message += `: ${err.params.allowedValues.map((v) => JSON.stringify(v)).join(", ")}`;
          }
          errors.push({ ...locate(where, at), message, by: "kubernetes-models" });
        }
      }
      typed.push({ where, model, object });
    });
  }
  errors.push(...excessProperties(typed));
  return { documents, errors };
}

function unescapePointer(segment) {
  const s = segment.replace(/~1/g, "/").replace(/~0/g, "~");
  return /^[0-9]+$/.test(s) ? Number(s) : s;
}

/// The file, document, line and dotted path of `at` (keys and indices) in a document: the line
/// of the deepest part of `at` that the document has.
function locate({ file, index, doc, lineOf }, at) {
  let line = lineOf(doc.contents.range[0]);
  for (let depth = 1; depth <= at.length; depth++) {
    const parent = depth === 1 ? doc.contents : doc.getIn(at.slice(0, depth - 1), true);
    const key = at[depth - 1];
    let node = null;
    if (YAML.isMap(parent)) {
      const pair = parent.items.find((p) => p.key && p.key.value === key);
      node = pair ? pair.key : null;
    } else if (YAML.isSeq(parent) && typeof key === "number") {
      node = parent.items[key] || null;
    }
    if (!node || !node.range) break;
    line = lineOf(node.range[0]);
  }
  return { file, index, line, path: at.join(".") };
}

/// Every document typed as its model's interface, compiled in one TypeScript program.
function excessProperties(typed) {
  if (typed.length === 0) return [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "monitor-k8s-"));
  try {
    const sources = typed.map(({ model, object }, i) => {
      const name = path.join(dir, `doc${i}.ts`);
      fs.writeFileSync(
        name,
        `import type { ${model.iface} } from ${JSON.stringify(model.spec)};\n` +
          `const document: ${model.iface} = ${JSON.stringify(object, null, 2)};\n` +
          "export default document;\n",
      );
      return name;
    });
    const program = ts.createProgram(sources, {
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      types: [],
      target: ts.ScriptTarget.ES2020,
      module: ts.ModuleKind.CommonJS,
      moduleResolution: ts.ModuleResolutionKind.Node10,
      baseUrl: NODE_MODULES,
      paths: { "*": ["*"] },
    });
    const errors = [];
    for (const d of ts.getPreEmitDiagnostics(program)) {
      const i = d.file ? sources.indexOf(path.resolve(d.file.fileName)) : -1;
      // Types written out inline (the CRD's nested objects) run to thousands of characters.
      const message = ts
        .flattenDiagnosticMessageText(d.messageText, " ")
        .replace(/'\{[^']{80,}\}'/g, "'{...}'");
      if (i < 0) {
        // Not about a document: the models or the compiler setup are broken, not the manifests.
        throw new Error(`TypeScript: ${d.file ? d.file.fileName + ": " : ""}${message}`);
      }
      const at = pathAt(d.file, d.start);
      errors.push({ ...locate(typed[i].where, at), message, by: "typescript" });
    }
    return errors;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/// The keys and indices leading to position `pos` in the document's object literal.
function pathAt(sourceFile, pos) {
  const at = [];
  let node = sourceFile;
  for (;;) {
    const child = ts.forEachChild(node, (c) =>
      c.getStart(sourceFile) <= pos && pos < c.end ? c : undefined,
    );
    if (!child) return at;
    if (ts.isPropertyAssignment(child)) at.push(child.name.text);
    if (ts.isArrayLiteralExpression(node)) at.push(node.elements.indexOf(child));
    node = child;
  }
}

// process.exit() would cut the output short (a pipe takes 64 KiB at a time): the exit code is
// set, and node exits once stdout is written.
try {
  const result = main(process.argv.slice(2));
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exitCode = result.errors.length === 0 ? 0 : 1;
} catch (e) {
  process.stderr.write(`validate.js: ${e && e.stack ? e.stack : e}\n`);
  process.exitCode = 2;
}
