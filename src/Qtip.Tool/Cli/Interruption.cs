using System.Runtime.InteropServices;

namespace Qtip.Tool.Cli;

/// <summary>
/// SIGINT (Ctrl-C) and SIGTERM as a cancellation token for a long command: the first signal cancels the token and the
/// command winds down (a quantize run keeps its completed layers and exits 130); a second signal terminates at once.
/// </summary>
public sealed class Interruption : IDisposable
{
    private readonly CancellationTokenSource cts = new();
    private readonly PosixSignalRegistration[] registrations;

    public Interruption()
    {
        registrations =
        [
            PosixSignalRegistration.Create(PosixSignal.SIGINT, Handle),
            PosixSignalRegistration.Create(PosixSignal.SIGTERM, Handle),
        ];
    }

    public CancellationToken Token => cts.Token;

    private void Handle(PosixSignalContext context)
    {
        if (cts.IsCancellationRequested)
            return; // the second signal: the default action (terminate)
        context.Cancel = true;
        cts.Cancel();
    }

    public void Dispose()
    {
        foreach (var r in registrations)
            r.Dispose();
        cts.Dispose();
    }
}
